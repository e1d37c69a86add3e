"""Sentence templates of the test split: written apart from the dev ones, never tuned on.
Slots as in ``templates_dev``."""

TEMPLATES: tuple[str, ...] = (
    "Chargeback opened: {full} disputes transaction on {card} (case {code})",
    "Order {id} shipped to {full}, {street}; courier ETA {duration}",
    "WARN notify: addressee {given} unreachable at {phone}, will retry via {host}",
    "Hello team, {full} here - I moved to {street} and my cell is {phone}. Thanks!",
    "nurse {surname} updated chart of {full} (born {dob}) on {host}",
    "AuthorizationError: card {card} of {full} blocked by fraud rule {code}",
    "Sender {given} wrote: please stop texting {phone}",
    "Agent note: spoke with {full} who confirmed birth date {dob} and address {street}",
    "prof {surname} booked appointment {uuid} for {full}",
    "checkout failed for guest {full} ({street}) on {route} after {duration}",
    "RuntimeError: cannot charge {card}; customer {given} informed, build {version}",
    "ms {surname} left a voicemail from {phone} about ticket {id}",
    "billing address mismatch for {full}: expected {street}",
    "Insurance lookup for member {full}, date of birth {dob}, took {duration}",
    "account holder {full} reported card {card} stolen; ref {uuid}",
    "herr {surname} wants the invoice for {id} mailed to {street}",
    "Escalation: {full} phoned twice from {phone}, agent {given} on shift",
    "sms to {phone} bounced for subscriber {full} (gateway {host})",
    "frau {surname} says release {version} lost her saved card {card}",
    "Return label created for {full} at {street}, tracking {code}",
)
