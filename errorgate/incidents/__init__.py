"""The incident engine: Alertmanager/Grafana webhooks -> incidents with a timeline, measured
MTTD/MTTA/MTTR, escalation until acknowledged, P1 postmortems (``errorgate incidents``)."""
