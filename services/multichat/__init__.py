"""multichat: host a chat room for friends, on a LAN or across the internet."""

__version__ = "0.1.0"
