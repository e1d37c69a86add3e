"""errorgate.governance"""
