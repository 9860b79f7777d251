"""The simulated plant served over real industrial protocols (Modbus TCP, OPC UA, Sparkplug B).

Each module serves a :class:`~shopfloor.simulator.Plant` in real time and returns the
connector configuration that reads it back, so the demo runs the whole path through a
real protocol stack.
"""
