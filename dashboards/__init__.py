"""errorgate.dashboards"""
