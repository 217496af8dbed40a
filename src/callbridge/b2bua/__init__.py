"""callbridge.b2bua"""
