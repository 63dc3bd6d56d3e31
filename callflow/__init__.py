"""callflow: runs a medical practice's phone call flows on Asterisk."""

__version__ = "0.1.0"
