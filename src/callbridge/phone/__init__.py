"""callbridge.phone"""
