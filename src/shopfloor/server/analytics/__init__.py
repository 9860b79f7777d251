"""Analytics over stored history: pure functions and the jobs that run them."""
