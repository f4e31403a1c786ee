-- The crawler's map of a TM2 network. Times are Unix milliseconds (UTC).

-- One row per `tm2p2p crawl` or `tm2p2p seed` process.
CREATE TABLE run (
    id          INTEGER PRIMARY KEY,
    mode        TEXT    NOT NULL,             -- 'crawl' or 'seed'
    network     TEXT    NOT NULL DEFAULT '',  -- chain ID crawled ('' until learned)
    started_at  INTEGER NOT NULL,
    finished_at INTEGER
);

-- A round probes every known address once (and those found during it).
CREATE TABLE round (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES run(id),
    number      INTEGER NOT NULL,             -- 1, 2, ... within the run
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    probed      INTEGER NOT NULL DEFAULT 0,
    reachable   INTEGER NOT NULL DEFAULT 0
);

-- A node that completed a verified handshake: authenticated key, NodeInfo
-- ID and the dialled ID all equal. Its NodeInfo as last seen.
CREATE TABLE node (
    id          TEXT    PRIMARY KEY,          -- bech32 node ID
    moniker     TEXT    NOT NULL,
    network     TEXT    NOT NULL,
    software    TEXT    NOT NULL,
    version     TEXT    NOT NULL,             -- NodeInfo.Version
    channels    TEXT    NOT NULL,             -- hex, one byte per channel
    rpc_address TEXT    NOT NULL,
    tx_index    TEXT    NOT NULL,
    net_address TEXT    NOT NULL,             -- what it advertises
    first_seen  INTEGER NOT NULL,             -- first verified handshake
    last_seen   INTEGER NOT NULL              -- last verified handshake
);

CREATE TABLE node_version (
    node_id     TEXT    NOT NULL REFERENCES node(id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    optional    INTEGER NOT NULL,
    PRIMARY KEY (node_id, name)
);

-- Every address heard of: from --seeds, from discovery responses, from a
-- node's own NodeInfo, or (seed) from nodes that connected to us.
CREATE TABLE address (
    addr         TEXT    PRIMARY KEY,         -- canonical ID@ip:port
    node_id      TEXT    NOT NULL,            -- the ID the address names
    ip           TEXT    NOT NULL,
    port         INTEGER NOT NULL,
    source       TEXT    NOT NULL,            -- 'seed', 'pex', 'self', 'inbound'
    allowed      INTEGER NOT NULL,            -- inside the --allow policy when last heard of
    -- 'new' (never probed), 'reachable', 'unreachable', 'gone' (unreachable
    -- for --gone-after), 'liar' (its NodeInfo ID is not its key's),
    -- 'wrong_id' (a different, consistent node answers there),
    -- 'incompatible' (other network or versions), 'invalid' (NodeInfo fails
    -- validation), 'refused' (outside --allow: never dialled)
    status       TEXT    NOT NULL,
    first_seen   INTEGER NOT NULL,
    last_attempt INTEGER,
    last_success INTEGER,
    last_failure INTEGER,
    failures     INTEGER NOT NULL DEFAULT 0,  -- in a row
    latency_ms   INTEGER,                     -- TCP connect to NodeInfo checked, last success
    last_error   TEXT,
    auth_id      TEXT,                        -- ID the peer authenticated as, last attempt
    claimed_id   TEXT                         -- ID its NodeInfo claimed, last attempt
);
CREATE INDEX address_node ON address(node_id);
CREATE INDEX address_status ON address(status);

-- Advertised-by: the verified node from_id listed to_addr in a discovery
-- response. Addresses from untrusted peers are never recorded.
CREATE TABLE edge (
    from_id     TEXT    NOT NULL,
    to_addr     TEXT    NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    last_round  INTEGER NOT NULL REFERENCES round(id),
    PRIMARY KEY (from_id, to_addr)
);

-- Peers that lied or broke the protocol, one row per event.
CREATE TABLE misbehavior (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    addr        TEXT    NOT NULL,             -- the address dialled
    auth_id     TEXT,
    claimed_id  TEXT,
    kind        TEXT    NOT NULL,             -- 'liar', 'wrong_id', 'invalid', 'bad_response'
    reason      TEXT    NOT NULL
);
