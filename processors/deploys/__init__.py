"""Per-(service, version) state that ages out, deploy verdicts and routing health (issue 18)."""
