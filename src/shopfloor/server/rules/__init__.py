"""Rules over live values: alarm conditions, the ISA-18.2 state machine, its journal."""
