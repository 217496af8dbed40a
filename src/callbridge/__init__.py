"""callbridge: a contact-center call-control server (SIP B2BUA + Wolkvox agentbox-compatible HTTP API)."""

__version__ = "0.1.0"
