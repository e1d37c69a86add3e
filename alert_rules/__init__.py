"""errorgate.alert_rules"""
