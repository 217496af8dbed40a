"""callbridge.transport"""
