"""Leader election for errorgate's singleton roles (etcd leases, fencing tokens)."""
