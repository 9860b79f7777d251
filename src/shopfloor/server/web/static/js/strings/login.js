// Strings of the login page (/login), English; the translations are in the catalogues.

import { registerStrings } from "../i18n.js";

registerStrings({
  en: {
    "login.pageTitle": "shopfloor · log in",
    "login.name": "Name",
    "login.password": "Password",
    "login.code": "Code from the authenticator app (if set up)",
    "login.submit": "Log in",
    "login.unreachable": "The server cannot be reached.",
  },
});
