"""callbridge.sip"""
