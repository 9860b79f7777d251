// How the alarm views name ISA-18.2 states and priorities. Literal keys, so that a search
// of the source finds every string the page can show.

import { t } from "./i18n.js";

export const STATE_KEYS = Object.freeze({
  normal: "alarms.state.normal",
  unacknowledged: "alarms.state.unacknowledged",
  acknowledged: "alarms.state.acknowledged",
  returned_unacknowledged: "alarms.state.returned",
  shelved: "alarms.state.shelved",
  suppressed: "alarms.state.suppressed",
  out_of_service: "alarms.state.outOfService",
});

const PRIORITY_KEYS = Object.freeze({
  critical: "alarms.priority.critical",
  high: "alarms.priority.high",
  medium: "alarms.priority.medium",
  low: "alarms.priority.low",
});

/** The label of a state; a state this page does not know shows as it came. */
export function stateLabel(state) {
  return STATE_KEYS[state] ? t(STATE_KEYS[state]) : String(state ?? "?");
}

export function priorityLabel(priority) {
  return PRIORITY_KEYS[priority] ? t(PRIORITY_KEYS[priority]) : String(priority ?? "?");
}
