// One confirmation dialog (a native <dialog>, modal): the admin page's switches and the
// machine page's writes ask through it. The page's template holds the element:
//   <dialog id=…><form method="dialog"><h2/><p/>… <button value="cancel"> <button value="confirm" id=…ok>

/**
 * Show `dialog` with `title`, the lines of `text` and `ok` on the confirming button;
 * resolves true when confirmed, false on Cancel or Escape.
 */
export function confirmDialog(dialog, { title, text, ok }) {
  const [heading] = dialog.getElementsByTagName("h2");
  const [body] = dialog.getElementsByTagName("p");
  const okButton = dialog.querySelector('button[value="confirm"]');
  heading.textContent = title;
  body.replaceChildren(
    ...[text]
      .flat()
      .flatMap((line, i) => (i ? [document.createElement("br"), line] : [line])),
  );
  okButton.textContent = ok;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), {
      once: true,
    });
    dialog.showModal();
    okButton.focus();
  });
}
