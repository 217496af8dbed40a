"""callbridge.storage"""
