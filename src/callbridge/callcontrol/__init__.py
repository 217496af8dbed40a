"""callbridge.callcontrol"""
