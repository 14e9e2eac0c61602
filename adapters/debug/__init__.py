"""Debugging reads for operators: a conversation's history in pages, time travel, replay
checks, export and import, the condition language of `bisect`, and diffs between states."""
