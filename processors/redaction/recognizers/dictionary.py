"""Lower-case English words, from SCOWL (Kevin Atkinson's spell-checker word lists, the size-50
American list Debian ships as ``wamerican``: maintained, permissively licensed, and the list
behind most Linux spell checkers). A capitalised word whose lower-case form is not an English
word is most often a proper noun: a name, a place, a product. Only entries that are lower case
in SCOWL are kept, so "thomas" (listed as "Thomas") is not a word here and "king" is.

Rebuild (for a newer SCOWL): ``python -m errorgate.processors.redaction.recognizers.dictionary
/usr/share/dict/american-english``. Nothing is read at run time but the bundled file.
"""

from __future__ import annotations

import gzip
import re
import sys
from functools import cache
from pathlib import Path

DATA = Path(__file__).with_name("data") / "english_words.txt.gz"
_ENTRY = re.compile(r"[a-z]{2,}")


# Names of software, services and vendors that telemetry text capitalises ("Kafka Connect",
# "Grafana Loki") and that are no English words: not people, not streets.
_TECH = """kafka redis grafana kubernetes postgres postgresql mysql mariadb mongodb nginx envoy istio
    linkerd consul terraform ansible jenkins gitlab github bitbucket docker podman prometheus loki
    tempo jaeger zipkin elasticsearch kibana logstash fluentd fluentbit opensearch cassandra
    couchbase couchdb dynamodb firestore firebase bigquery databricks flink hadoop kinesis aws gcp
    okta keycloak paypal twilio sendgrid mailgun pagerduty opsgenie jira confluence sentry datadog
    newrelic dynatrace splunk otel opentelemetry grpc graphql protobuf django flask fastapi laravel
    quarkus micronaut nodejs deno golang kotlin scala celery sidekiq rabbitmq activemq zookeeper
    etcd coredns haproxy traefik cloudflare akamai fastly heroku netlify vercel openshift rancher
    helm argo argocd flagger keda knative linux ubuntu debian alpine centos redhat fedora macos ios
    android chromium safari webkit firefox nodejs npm pypi maven gradle webpack vite kubectl
    minikube eks gke aks ec2 s3 rds sqs sns iam vpc cloudwatch cloudfront alertmanager thanos
    cortex mimir pyroscope clickhouse timescaledb influxdb questdb memcached varnish squid istiod
    envoyproxy springboot hibernate jvm openjdk graalvm wildfly tomcat jetty undertow uvicorn
    gunicorn werkzeug starlette pydantic sqlalchemy alembic psycopg asyncpg aiohttp httpx
    stripe adyen braintree klarna shopify magento salesforce hubspot zendesk intercom"""
TECH_WORDS = frozenset(_TECH.split())


@cache
def english_words() -> frozenset[str]:
    """SCOWL's lower-case English words and ``TECH_WORDS``."""
    with gzip.open(DATA, "rt", encoding="ascii") as f:
        return frozenset(line.strip() for line in f if line.strip()) | TECH_WORDS


def build(source: Path, target: Path = DATA) -> int:
    """Write the lower-case entries of a SCOWL word list to ``target``; returns their count."""
    words = sorted({w for w in source.read_text(encoding="utf-8").split() if _ENTRY.fullmatch(w)})
    # mtime=0: the same list gives the same bytes (reproducible, no diff noise).
    with target.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(("\n".join(words) + "\n").encode("ascii"))
    return len(words)


if __name__ == "__main__":
    print(build(Path(sys.argv[1])), "words written to", DATA)
