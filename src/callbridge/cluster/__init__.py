"""callbridge as a cluster on PostgreSQL (docs/cluster.md): operations placed on nodes by leases with fencing
epochs, node identity, and the Kamailio configuration that routes each operation's SIP to its owner.

- `leases`: the lease statements (compare-and-set, PostgreSQL's clock);
- `nodes`: joining, heartbeat, schema check;
- `planner`: sans-I/O placement (what this node does with each lease in a round);
- `fencing`: the epochs every write declares, refused by the database when stale;
- `member`: the asyncio loop that renews, takes over, hands over and drains;
- `kamailio`: the configuration template and the routing tables Kamailio reads.
"""
