//! The SQL endpoint's connection start: raw bytes sent to a running endpoint (in this process)
//! as a client's first bytes — SSL/GSS/cancel requests, the startup message, a password or SASL
//! exchange, then queries. A panic anywhere in the server aborts (the hook below), so the
//! fuzzer sees it; a stack overflow is a crash by itself.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use skystream_pgsql::{SqlConfig, SqlServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Fixture {
    rt: tokio::runtime::Runtime,
    trust: SocketAddr,
    scram: SocketAddr,
    _servers: Vec<SqlServer>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        std::panic::set_hook(Box::new(|info| {
            eprintln!("panic: {info}\n{}", std::backtrace::Backtrace::force_capture());
            std::process::abort();
        }));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let start = |password: Option<&str>| {
            let cfg = SqlConfig {
                password: password.map(str::to_string),
                query_timeout: Duration::from_millis(500),
                startup_timeout: Duration::from_secs(2),
                ..Default::default()
            };
            rt.block_on(SqlServer::start(
                "127.0.0.1:0".parse().unwrap(),
                cfg,
                vec![],
            ))
            .unwrap()
        };
        let (trust, scram) = (start(None), start(Some("fuzz")));
        Fixture {
            trust: trust.addr,
            scram: scram.addr,
            _servers: vec![trust, scram],
            rt,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let addr = if which & 1 == 0 { f.trust } else { f.scram };
    // From one of many loopback addresses: failed logins lock out an address, not the fuzzer.
    let from: SocketAddr = format!("127.0.0.{}:0", 2 + (which >> 1) % 250)
        .parse()
        .unwrap();
    f.rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if socket.bind(from).is_err() {
            return;
        }
        let Ok(mut c) = socket.connect(addr).await else {
            return;
        };
        let _ = c.write_all(bytes).await;
        let _ = c.shutdown().await;
        let mut sink = vec![0u8; 64 << 10];
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while let Ok(n) = c.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    });
});
