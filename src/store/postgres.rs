//! The PostgreSQL backend: several authlog nodes on one log, in a database the
//! operator already runs with replication and failover.
//!
//! # Positions without skips
//! Every append batch is one call of the SQL function `authlog_append`, in one
//! round trip and one transaction. The function first locks the single row of
//! `authlog_head` (`SELECT … FOR UPDATE`) and holds that lock until commit, so
//! batches from every node are serialised: positions are handed out
//! contiguously and become visible in position order. A reader that reads
//! `position >= p` can therefore never see position p+1 before p, and no event
//! that commits "late" can land behind a reader: the committed log is always a
//! prefix. (A sequence or an identity column would not do: their values are
//! taken before commit, so a reader could skip a slow transaction's event.)
//!
//! Each append in a batch is decided on its own inside the function: its
//! expected revision against the stream's last revision (`UNIQUE(stream,
//! revision)` makes that an index lookup), idempotent retries by event id
//! (`id UNIQUE`), and a conflicting append fails alone. Bodies are `bytea`,
//! never `jsonb`: the stored bytes are the Merkle leaves.
//!
//! One `NOTIFY authlog_appended` per batch wakes followers on every node; a
//! follower also polls once a second, so a lost notification only delays it.
//!
//! # Group commit
//! One writer task per node sends batches over its own connection: while one
//! batch is in flight, the appends that arrive queue up and go in the next. A
//! batch costs one round trip plus the server's commit (an fsync, and with
//! synchronous replication a replica's acknowledgement).
//!
//! # Leases and checkpoints
//! A lease is a session-level advisory lock on a connection of its own: the
//! lock goes when the connection does (a node killed with SIGKILL releases it as
//! soon as the server sees the socket close). Checkpoints are rows updated by
//! compare-and-set on a version column.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use authlog_schemas::{Position, Recorded};
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    Appended, CheckReport, EventStore, Expected, Head, Lease, NewEvent, ReadFrom, StoreError,
    StoreMetrics,
};

/// The schema version this build writes; older schemas are migrated at open.
const SCHEMA_VERSION: i32 = 1;
/// The most appends one batch carries.
const MAX_BATCH: usize = 512;
/// The most events one read returns.
const MAX_READ: usize = 1024;
/// The channel `authlog_append` notifies once per batch.
const CHANNEL: &str = "authlog_appended";
/// How often a follower looks for new events without a notification.
const POLL: Duration = Duration::from_secs(1);

/// Session settings on every connection. A lock is never waited for forever;
/// `authlog_append` runs at READ COMMITTED whatever the database's default (at
/// REPEATABLE READ the head row lock would fail under contention instead of
/// waiting); and the server notices a node that vanished within about half a
/// minute (TCP keepalives and user timeout), which is what releases that
/// node's advisory-lock leases. `idle_in_transaction_session_timeout` guards
/// the explicit transactions (schema migration) should a node stall in one.
const SESSION_SETTINGS: &str = "SET lock_timeout = '10s'; \
     SET idle_in_transaction_session_timeout = '30s'; \
     SET statement_timeout = '60s'; \
     SET default_transaction_isolation = 'read committed'; \
     SET tcp_keepalives_idle = 10; \
     SET tcp_keepalives_interval = 5; \
     SET tcp_keepalives_count = 3; \
     SET tcp_user_timeout = 30000; \
     SET application_name = 'authlog'";

const MIGRATION_1: &str = r#"
CREATE TABLE authlog_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE authlog_head (
    id  int PRIMARY KEY CHECK (id = 1),
    pos bigint NOT NULL
);
INSERT INTO authlog_head VALUES (1, -1);
CREATE TABLE authlog_events (
    position bigint PRIMARY KEY,
    stream   text   NOT NULL,
    revision bigint NOT NULL,
    id       uuid   NOT NULL UNIQUE,
    body     bytea  NOT NULL,
    sidecar  bytea,
    UNIQUE (stream, revision)
);
CREATE TABLE authlog_checkpoints (
    name    text   PRIMARY KEY,
    version bigint NOT NULL,
    value   bytea  NOT NULL
);
-- One batch of appends, each decided on its own. Expected: -1 any, -2 no
-- stream, n >= 0 the stream's last revision. One row per append:
-- status 0 appended, 1 wrong expected revision (actual), 2 an id already in
-- the log but not as this append describes it, 3 a retry of an append that
-- is already in the log (its original first position and last revision).
CREATE FUNCTION authlog_append(
    p_streams text[], p_expected bigint[], p_counts int[],
    p_ids uuid[], p_bodies bytea[], p_sidecars bytea[])
RETURNS TABLE (status int, first_pos bigint, last_rev bigint, actual bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    head bigint;
    start_head bigint;
    r int;
    e int := 1;
    n int;
    i int;
    cur bigint;
    expected bigint;
    seen int;
    ok boolean;
    f_pos bigint;
    f_rev bigint;
    row_pos bigint;
    row_rev bigint;
    row_stream text;
BEGIN
    -- Held until commit: batches from every node take positions in turn.
    SELECT pos INTO head FROM authlog_head WHERE id = 1 FOR UPDATE;
    start_head := head;
    FOR r IN 1 .. coalesce(array_length(p_streams, 1), 0) LOOP
        n := p_counts[r];
        expected := p_expected[r];
        SELECT count(*) INTO seen FROM authlog_events WHERE id = ANY (p_ids[e : e + n - 1]);
        IF seen > 0 THEN
            ok := seen = n;
            f_pos := NULL;
            f_rev := NULL;
            IF ok THEN
                FOR i IN 0 .. n - 1 LOOP
                    SELECT position, revision, stream INTO row_pos, row_rev, row_stream
                        FROM authlog_events WHERE id = p_ids[e + i];
                    IF row_stream <> p_streams[r] THEN ok := false; EXIT; END IF;
                    IF i = 0 THEN
                        f_pos := row_pos;
                        f_rev := row_rev;
                    ELSIF row_rev <> f_rev + i OR row_pos <> f_pos + i THEN
                        ok := false;
                        EXIT;
                    END IF;
                END LOOP;
            END IF;
            IF ok THEN
                ok := CASE WHEN expected = -1 THEN true
                           WHEN expected = -2 THEN f_rev = 0
                           ELSE f_rev = expected + 1 END;
            END IF;
            IF ok THEN
                RETURN QUERY SELECT 3, f_pos, f_rev + n - 1, NULL::bigint;
            ELSE
                RETURN QUERY SELECT 2, NULL::bigint, NULL::bigint, NULL::bigint;
            END IF;
            e := e + n;
            CONTINUE;
        END IF;
        SELECT max(revision) INTO cur FROM authlog_events WHERE stream = p_streams[r];
        ok := CASE WHEN expected = -1 THEN true
                   WHEN expected = -2 THEN cur IS NULL
                   ELSE coalesce(cur = expected, false) END;
        IF NOT ok THEN
            RETURN QUERY SELECT 1, NULL::bigint, NULL::bigint, cur;
            e := e + n;
            CONTINUE;
        END IF;
        f_rev := coalesce(cur + 1, 0);
        INSERT INTO authlog_events (position, stream, revision, id, body, sidecar)
            SELECT head + k, p_streams[r], f_rev + k - 1, p_ids[e + k - 1],
                   p_bodies[e + k - 1], p_sidecars[e + k - 1]
            FROM generate_series(1, n) AS k;
        RETURN QUERY SELECT 0, head + 1, f_rev + n - 1, NULL::bigint;
        head := head + n;
        e := e + n;
    END LOOP;
    IF head > start_head THEN
        UPDATE authlog_head SET pos = head WHERE id = 1;
        PERFORM pg_notify('authlog_appended', head::text);
    END IF;
END
$fn$;
"#;

fn io<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Io(format!("postgres: {e}"))
}

/// The URL without its password (in the user part or a `password=`
/// parameter), for messages.
pub fn redact(url: &str) -> String {
    let url = match query_start(url).map(|q| (&url[..q], &url[q + 1..])) {
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            return format!("{}?{}", redact(base), query.join("&"));
        }
        None => url,
    };
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) if userinfo.contains(':') => {
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:***@{host}")
            }
            Some(_) => url.to_string(),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Where and how to connect: the libpq-style settings, and TLS through rustls
/// (certificates checked against the system's roots, or the `sslrootcert`
/// file the URL names; the host name or IP address checked too).
#[derive(Clone)]
pub struct Target {
    config: Config,
    tls: MakeRustlsConnect,
}

type TlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

impl Target {
    async fn connect_raw(
        &self,
    ) -> Result<(Client, tokio_postgres::Connection<Socket, TlsStream>), StoreError> {
        self.config.connect(self.tls.clone()).await.map_err(io)
    }
}

/// Where a URL's query starts: after the user part (whose password may hold
/// an unencoded `?`), as tokio-postgres reads it.
fn query_start(url: &str) -> Option<usize> {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let host_from = url[after_scheme..]
        .find('@')
        .map_or(after_scheme, |a| after_scheme + a + 1);
    url[host_from..].find('?').map(|q| host_from + q)
}

/// libpq's `sslmode=prefer` (its default, and here too): TLS when the server
/// offers it, to keep the traffic from passive listeners, without checking
/// the certificate (libpq does not check it in this mode either). Handshake
/// signatures are still verified.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Parses a `postgres://` URL. `sslmode` as in libpq: `disable` never uses
/// TLS; `prefer` (the default) uses it when offered, unverified; `require`,
/// `verify-ca` and `verify-full` insist on it and check the certificate chain
/// and the host name (stricter than libpq's `require` and `verify-ca`),
/// against the system's roots or the CA certificates (PEM) in
/// `sslrootcert=PATH`.
pub fn parse_url(url: &str) -> Result<Target, StoreError> {
    let bad = |e: &dyn std::fmt::Display| StoreError::BadUrl(format!("{}: {e}", redact(url)));
    let mut rootcert = None;
    let mut verify = false;
    let cleaned = match query_start(url) {
        None => url.to_string(),
        Some(q) => {
            let (base, query) = (&url[..q], &url[q + 1..]);
            let mut kept = Vec::new();
            for kv in query.split('&').filter(|kv| !kv.is_empty()) {
                match kv.split_once('=') {
                    Some(("sslrootcert", _)) => {
                        let path = form_urlencoded::parse(kv.as_bytes())
                            .next()
                            .map(|(_, v)| v.into_owned())
                            .unwrap_or_default();
                        rootcert = Some(std::path::PathBuf::from(path));
                    }
                    Some(("sslmode", "verify-full" | "verify-ca" | "require")) => {
                        verify = true;
                        kept.push("sslmode=require".to_string());
                    }
                    _ => kept.push(kv.to_string()),
                }
            }
            if kept.is_empty() {
                base.to_string()
            } else {
                format!("{base}?{}", kept.join("&"))
            }
        }
    };
    let config = Config::from_str(&cleaned).map_err(|e| bad(&e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?;
    let tls = if verify {
        let mut roots = rustls::RootCertStore::empty();
        match &rootcert {
            Some(path) => {
                use rustls::pki_types::{CertificateDer, pem::PemObject};
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| bad(&format!("sslrootcert {}: {e}", path.display())))?
                    .filter_map(Result::ok);
                roots.add_parsable_certificates(certs);
                if roots.is_empty() {
                    return Err(bad(&format!(
                        "sslrootcert {}: no certificate",
                        path.display()
                    )));
                }
            }
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth()
    };
    Ok(Target {
        config,
        tls: MakeRustlsConnect::new(tls),
    })
}

async fn connect(config: &Target) -> Result<Client, StoreError> {
    let (client, connection) = config.connect_raw().await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    client.batch_execute(SESSION_SETTINGS).await.map_err(io)?;
    Ok(client)
}

/// Creates or migrates the schema, one node at a time.
async fn migrate(client: &mut Client) -> Result<String, StoreError> {
    let txn = client.transaction().await.map_err(io)?;
    txn.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&super::name_key("authlog schema")],
    )
    .await
    .map_err(io)?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS authlog_schema (id int PRIMARY KEY CHECK (id = 1), version int NOT NULL)",
    )
    .await
    .map_err(io)?;
    let version: i32 = txn
        .query_opt("SELECT version FROM authlog_schema WHERE id = 1", &[])
        .await
        .map_err(io)?
        .map_or(0, |r| r.get(0));
    if version > SCHEMA_VERSION {
        return Err(StoreError::Io(format!(
            "the database's authlog schema is version {version}, newer than this build's {SCHEMA_VERSION}: upgrade authlog"
        )));
    }
    if version < 1 {
        txn.batch_execute(MIGRATION_1).await.map_err(io)?;
        txn.execute(
            "INSERT INTO authlog_meta (key, value) VALUES ('log_id', $1)",
            &[&uuid::Uuid::now_v7().to_string()],
        )
        .await
        .map_err(io)?;
    }
    txn.execute(
        "INSERT INTO authlog_schema (id, version) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET version = $1",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(io)?;
    let log_id: String = txn
        .query_one("SELECT value FROM authlog_meta WHERE key = 'log_id'", &[])
        .await
        .map_err(io)?
        .get(0);
    txn.commit().await.map_err(io)?;
    Ok(log_id)
}

struct AppendRequest {
    stream: String,
    expected: Expected,
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// A connection that is made again when it breaks.
struct Reconnecting {
    config: Target,
    client: Mutex<Option<Arc<Client>>>,
}

impl Reconnecting {
    async fn get(&self) -> Result<Arc<Client>, StoreError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Arc::new(connect(&self.config).await?);
        *slot = Some(c.clone());
        Ok(c)
    }
}

struct Inner {
    reads: Reconnecting,
    config: Target,
    sender: mpsc::Sender<AppendRequest>,
    head: watch::Receiver<Option<u64>>,
    log_id: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The PostgreSQL event store.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("log_id", &self.inner.log_id)
            .finish()
    }
}

impl PostgresStore {
    /// Connects, creates or migrates the schema, and starts the writer and the
    /// follower that wakes subscriptions.
    pub async fn open(
        url: &str,
        metrics: Option<StoreMetrics>,
    ) -> Result<PostgresStore, StoreError> {
        let mut target = parse_url(url)?;
        let config = &mut target.config;
        // This side notices a server that vanished (no RST) within about half
        // a minute too, instead of the operating system's ten.
        config.keepalives_idle(Duration::from_secs(10));
        config.keepalives_interval(Duration::from_secs(5));
        config.keepalives_retries(3);
        config.tcp_user_timeout(Duration::from_secs(30));
        config.connect_timeout(Duration::from_secs(10));
        let config = target;
        let mut client = connect(&config).await?;
        let log_id = migrate(&mut client).await?;
        let head = read_head(&client).await?;
        let (head_tx, head_rx) = watch::channel(head);
        let head_tx = Arc::new(head_tx);
        let (sender, receiver) = mpsc::channel(MAX_BATCH * 4);
        let writer = tokio::spawn(writer(
            config.clone(),
            Some(client),
            receiver,
            head_tx.clone(),
            metrics,
        ));
        let follower = tokio::spawn(follow(config.clone(), head_tx));
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                reads: Reconnecting {
                    config: config.clone(),
                    client: Mutex::new(None),
                },
                config,
                sender,
                head: head_rx,
                log_id,
                tasks: vec![writer, follower],
            }),
        })
    }
}

async fn read_head(client: &Client) -> Result<Option<u64>, StoreError> {
    let pos: i64 = client
        .query_one("SELECT pos FROM authlog_head WHERE id = 1", &[])
        .await
        .map_err(io)?
        .get(0);
    Ok(u64::try_from(pos).ok())
}

/// Publishes `head` if it is beyond what is known.
fn advance(head: &watch::Sender<Option<u64>>, to: Option<u64>) {
    head.send_if_modified(|h| {
        if to > *h {
            *h = to;
            true
        } else {
            false
        }
    });
}

/// Listens for `NOTIFY authlog_appended` (and polls), so subscriptions on this
/// node see what other nodes append.
async fn follow(config: Target, head: Arc<watch::Sender<Option<u64>>>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let started = Instant::now();
        if let Err(e) = follow_once(&config, &head).await {
            // A connection that worked for a while starts the backoff over.
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(200);
            }
            tracing::warn!(error = %e, retry_in = ?backoff, "postgres follower: reconnecting");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

async fn follow_once(config: &Target, head: &watch::Sender<Option<u64>>) -> Result<(), StoreError> {
    let (client, mut connection) = config.connect_raw().await?;
    let (note_tx, mut note_rx) = mpsc::unbounded_channel::<String>();
    let driver = tokio::spawn(async move {
        let mut messages = stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if note_tx.send(n.payload().to_string()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "postgres follower connection");
                    break;
                }
            }
        }
    });
    let result = async {
        client
            .batch_execute(&format!("{SESSION_SETTINGS}; LISTEN {CHANNEL}"))
            .await
            .map_err(io)?;
        // Anything appended before LISTEN took effect.
        advance(head, read_head(&client).await?);
        loop {
            tokio::select! {
                note = note_rx.recv() => match note {
                    Some(payload) => advance(head, payload.parse().ok()),
                    None => return Err(StoreError::Io("postgres: notification connection closed".into())),
                },
                () = tokio::time::sleep(POLL) => advance(head, read_head(&client).await?),
            }
        }
    }
    .await;
    driver.abort();
    result
}

/// Takes appends off the queue in batches of up to [`MAX_BATCH`] and sends each
/// batch as one call of `authlog_append`.
async fn writer(
    config: Target,
    mut client: Option<Client>,
    mut receiver: mpsc::Receiver<AppendRequest>,
    head: Arc<watch::Sender<Option<u64>>>,
    metrics: Option<StoreMetrics>,
) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) => break,
            }
        }
        let c = match client.take().filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => match connect(&config).await {
                Ok(c) => c,
                Err(e) => {
                    for req in batch {
                        let _ = req.reply.send(Err(StoreError::Io(e.to_string())));
                    }
                    continue;
                }
            },
        };
        let started = Instant::now();
        let mut c = c;
        let mut outcome = commit_batch(&c, &batch).await;
        // The connection broke: whether the batch committed is unknown. Sending
        // the same batch again is safe (appends of ids already in the log after
        // the same expectation answer with their original result), so the
        // callers get the true outcome instead of an error.
        for _ in 0..3 {
            if outcome.is_ok() || !c.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            match connect(&config).await {
                Ok(fresh) => {
                    c = fresh;
                    outcome = commit_batch(&c, &batch).await;
                }
                Err(e) => outcome = Err(e),
            }
        }
        if let Some(m) = &metrics {
            m.batch_size.observe(batch.len() as f64);
            m.commit_seconds.observe(started.elapsed().as_secs_f64());
        }
        match outcome {
            Ok(results) => {
                let last = results
                    .iter()
                    .filter_map(|r| r.as_ref().ok())
                    .filter_map(|a| a.last_position())
                    .map(|p| p.commit)
                    .max();
                // Publish before answering: a caller that waits for its position
                // can count on the subscriptions having it.
                advance(&head, last);
                for (req, result) in batch.into_iter().zip(results) {
                    let _ = req.reply.send(result);
                }
                client = Some(c);
            }
            Err(e) => {
                tracing::warn!(error = %e, appends = batch.len(), "postgres append batch failed");
                for req in batch {
                    let _ = req.reply.send(Err(StoreError::Io(e.to_string())));
                }
                if !c.is_closed() {
                    client = Some(c);
                }
            }
        }
    }
}

fn expected_code(e: Expected) -> i64 {
    match e {
        Expected::Any => -1,
        Expected::NoStream => -2,
        Expected::Revision(r) => i64::try_from(r).unwrap_or(i64::MAX),
    }
}

async fn commit_batch(
    client: &Client,
    batch: &[AppendRequest],
) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    let mut streams = Vec::with_capacity(batch.len());
    let mut expected = Vec::with_capacity(batch.len());
    let mut counts = Vec::with_capacity(batch.len());
    let mut ids = Vec::new();
    let mut bodies: Vec<&[u8]> = Vec::new();
    let mut sidecars: Vec<Option<&[u8]>> = Vec::new();
    for req in batch {
        streams.push(req.stream.as_str());
        expected.push(expected_code(req.expected));
        counts.push(req.events.len() as i32);
        for e in &req.events {
            ids.push(e.id);
            bodies.push(&e.body);
            sidecars.push(e.sidecar.as_deref());
        }
    }
    let rows = client
        .query(
            "SELECT status, first_pos, last_rev, actual FROM authlog_append($1, $2, $3, $4, $5, $6)",
            &[&streams, &expected, &counts, &ids, &bodies, &sidecars],
        )
        .await
        .map_err(io)?;
    if rows.len() != batch.len() {
        return Err(StoreError::Corrupt(format!(
            "authlog_append answered {} rows for {} appends",
            rows.len(),
            batch.len()
        )));
    }
    Ok(batch
        .iter()
        .zip(rows)
        .map(|(req, row)| {
            let status: i32 = row.get(0);
            let first: Option<i64> = row.get(1);
            let last_rev: Option<i64> = row.get(2);
            let actual: Option<i64> = row.get(3);
            match (status, first, last_rev) {
                (0 | 3, Some(first), Some(last_rev)) => Ok(Appended {
                    positions: (0..req.events.len() as u64)
                        .map(|i| Position::dense(first as u64 + i))
                        .collect(),
                    last_revision: last_rev as u64,
                }),
                (1, _, _) => Err(StoreError::Conflict {
                    stream: req.stream.clone(),
                    expected: req.expected,
                    actual: actual.map(|a| a as u64),
                }),
                _ => Err(StoreError::IdReused {
                    id: req.events.first().map(|e| e.id).unwrap_or_default(),
                    stream: req.stream.clone(),
                    expected: req.expected,
                }),
            }
        })
        .collect())
}

fn to_recorded(row: &tokio_postgres::Row) -> Recorded {
    let position: i64 = row.get(0);
    let revision: i64 = row.get(2);
    Recorded {
        position: Position::dense(position as u64),
        revision: revision as u64,
        seq: position as u64,
        stream: row.get(1),
        body: row.get(3),
        sidecar: row.get(4),
    }
}

fn start_pos(from: ReadFrom) -> i64 {
    let p = match from {
        ReadFrom::Start => 0,
        ReadFrom::At(p) => p.commit,
        ReadFrom::After(p) => p.commit.saturating_add(1),
    };
    i64::try_from(p).unwrap_or(i64::MAX)
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(
        &self,
        stream: &str,
        expected: Expected,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        crate::store::validate_append(stream, &events)?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .sender
            .send(AppendRequest {
                stream: stream.to_string(),
                expected,
                events,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_revision: u64,
        limit: usize,
    ) -> Result<Vec<Recorded>, StoreError> {
        let client = self.inner.reads.get().await?;
        let from = i64::try_from(from_revision).unwrap_or(i64::MAX);
        let limit = limit.min(MAX_READ) as i64;
        let rows = client
            .query(
                "SELECT position, stream, revision, body, sidecar FROM authlog_events \
                 WHERE stream = $1 AND revision >= $2 ORDER BY revision LIMIT $3",
                &[&stream, &from, &limit],
            )
            .await
            .map_err(io)?;
        Ok(rows.iter().map(to_recorded).collect())
    }

    async fn read_all(&self, from: ReadFrom, limit: usize) -> Result<Vec<Recorded>, StoreError> {
        let client = self.inner.reads.get().await?;
        let limit = limit.min(MAX_READ) as i64;
        let rows = client
            .query(
                "SELECT position, stream, revision, body, sidecar FROM authlog_events \
                 WHERE position >= $1 ORDER BY position LIMIT $2",
                &[&start_pos(from), &limit],
            )
            .await
            .map_err(io)?;
        Ok(rows.iter().map(to_recorded).collect())
    }

    fn subscribe_all(&self, from: ReadFrom) -> BoxStream<'static, Result<Recorded, StoreError>> {
        struct State {
            store: PostgresStore,
            head: watch::Receiver<Option<u64>>,
            next: i64,
            buffer: std::collections::VecDeque<Recorded>,
            failed: bool,
        }
        let state = State {
            store: self.clone(),
            head: self.inner.head.clone(),
            next: start_pos(from),
            buffer: Default::default(),
            failed: false,
        };
        stream::unfold(state, |mut s| async move {
            if s.failed {
                return None;
            }
            loop {
                if let Some(r) = s.buffer.pop_front() {
                    s.next = r.position.commit as i64 + 1;
                    return Some((Ok(r), s));
                }
                let known = *s.head.borrow_and_update();
                if known.is_some_and(|h| h as i64 >= s.next) {
                    match s
                        .store
                        .read_all(ReadFrom::At(Position::dense(s.next as u64)), 256)
                        .await
                    {
                        Ok(page) if !page.is_empty() => {
                            s.buffer.extend(page);
                            continue;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            s.failed = true;
                            return Some((Err(e), s));
                        }
                    }
                }
                // Wait for the head to move (a notification or the poll).
                let _ = tokio::time::timeout(POLL, s.head.changed()).await;
            }
        })
        .boxed()
    }

    async fn head(&self) -> Result<Option<Head>, StoreError> {
        let client = self.inner.reads.get().await?;
        Ok(read_head(&client).await?.map(|p| Head {
            position: Position::dense(p),
            seq: p,
        }))
    }

    fn log_id(&self) -> String {
        self.inner.log_id.clone()
    }

    async fn check(&self) -> Result<CheckReport, StoreError> {
        // The head before the scan: on a live log more may follow, never less.
        let head = self.head().await?.map(|h| h.seq);
        let mut report = super::check_by_reading(self).await?;
        let last = report.events.checked_sub(1);
        if head > last {
            report.problems.push(format!(
                "the head row says {head:?} but the last event is {last:?}"
            ));
        }
        Ok(report)
    }

    fn is_shared(&self) -> bool {
        true
    }

    /// A session-level advisory lock on a connection of its own. The lease is
    /// lost when that connection breaks or stops answering.
    async fn try_lease(&self, name: &str, _holder: &str) -> Result<Option<Lease>, StoreError> {
        let (client, connection) = self.inner.config.connect_raw().await?;
        let (lost_tx, lost_rx) = watch::channel(false);
        let lost_tx = Arc::new(lost_tx);
        let on_close = lost_tx.clone();
        let conn_task = tokio::spawn(async move {
            let _ = connection.await;
            on_close.send_replace(true);
        });
        client.batch_execute(SESSION_SETTINGS).await.map_err(io)?;
        let key = super::name_key(&format!("authlog lease {name}"));
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .map_err(io)?
            .get(0);
        if !got {
            conn_task.abort();
            return Ok(None);
        }
        let client = Arc::new(client);
        let probe = {
            let client = client.clone();
            let lost_tx = lost_tx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let alive = tokio::time::timeout(
                        Duration::from_secs(5),
                        client.simple_query("SELECT 1"),
                    )
                    .await;
                    if !matches!(alive, Ok(Ok(_))) {
                        lost_tx.send_replace(true);
                        return;
                    }
                }
            })
        };
        struct Hold {
            _client: Arc<Client>,
            tasks: [tokio::task::JoinHandle<()>; 2],
        }
        impl Drop for Hold {
            fn drop(&mut self) {
                // Closing the connection releases the advisory lock.
                for t in &self.tasks {
                    t.abort();
                }
            }
        }
        Ok(Some(Lease::new(
            lost_rx,
            Hold {
                _client: client,
                tasks: [probe, conn_task],
            },
        )))
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let client = self.inner.reads.get().await?;
        Ok(client
            .query_opt(
                "SELECT version, value FROM authlog_checkpoints WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(io)?
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1))))
    }

    async fn save_checkpoint(
        &self,
        name: &str,
        expected: Option<u64>,
        value: Vec<u8>,
    ) -> Result<u64, StoreError> {
        let client = self.inner.reads.get().await?;
        let written = match expected {
            None => client
                .query_opt(
                    "INSERT INTO authlog_checkpoints (name, version, value) VALUES ($1, 1, $2) \
                     ON CONFLICT (name) DO NOTHING RETURNING version",
                    &[&name, &value],
                )
                .await
                .map_err(io)?,
            Some(v) => client
                .query_opt(
                    "UPDATE authlog_checkpoints SET version = version + 1, value = $3 \
                     WHERE name = $1 AND version = $2 RETURNING version",
                    &[&name, &(v as i64), &value],
                )
                .await
                .map_err(io)?,
        };
        match written {
            Some(r) => Ok(r.get::<_, i64>(0) as u64),
            None => {
                let actual = self.load_checkpoint(name).await?.map(|(v, _)| v);
                Err(super::checkpoint_conflict(name, expected, actual))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_redacted() {
        assert!(parse_url("postgres://authlog:pw@localhost:5432/authlog").is_ok());
        assert!(parse_url("postgresql://localhost/authlog?sslmode=disable").is_ok());
        assert!(parse_url("postgres://h/db?sslmode=require").is_ok());
        assert!(parse_url("postgres://h/db?sslmode=verify-full").is_ok());
        let err = match parse_url(
            "postgres://a:secret@h/db?sslmode=require&sslrootcert=/nonexistent.pem",
        ) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a missing sslrootcert is refused"),
        };
        assert!(
            err.contains("sslrootcert") && !err.contains("secret"),
            "{err}"
        );
        let err = match parse_url("postgres://a:secret@h/db?nonsense=1") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("an unknown option is refused"),
        };
        assert!(!err.contains("secret"), "{err}");
        assert_eq!(
            redact("postgres://authlog:hunter2@db:5432/x"),
            "postgres://authlog:***@db:5432/x"
        );
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
        assert_eq!(
            redact("postgres://u:p?w@h/db?sslmode=verify-full"),
            "postgres://u:***@h/db?sslmode=verify-full"
        );
        assert!(parse_url("postgres://u:p?w@h/db?sslmode=verify-full").is_ok());
        assert_eq!(
            redact("postgres://u@db/x?sslmode=disable&password=s3cret"),
            "postgres://u@db/x?sslmode=disable&password=***"
        );
    }

    #[test]
    fn expectations_are_encoded() {
        assert_eq!(expected_code(Expected::Any), -1);
        assert_eq!(expected_code(Expected::NoStream), -2);
        assert_eq!(expected_code(Expected::Revision(7)), 7);
    }
}
