"""callbridge.client"""
