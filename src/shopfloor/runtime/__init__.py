"""Process plumbing shared by edge and server: supervised tasks, bounded channels, clocks."""
