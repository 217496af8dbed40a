"""callbridge.http"""
