"""A room as a process: signals, the console, the state file, `status`/`down`, LAN addresses
and the ngrok tunnel. Builds on `multichat.server` and `multichat.protocol`.
"""
