//! The SQL front end: a pipeline script as the HTTP API receives it, parsed, checked against
//! the shape limits and planned with the API's sandbox. Any panic, stack overflow or hang is a
//! bug; errors are the expected answer to most inputs.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skystream_engine::connector::ConnectorRegistry;
use skystream_sql::PlanOptions;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fn registry() -> &'static ConnectorRegistry {
    static R: OnceLock<ConnectorRegistry> = OnceLock::new();
    R.get_or_init(skystream_registry::registry)
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let options = PlanOptions {
        memory_limit: Some(64 << 20),
        table_check: Some(skystream_api::Sandbox::default().table_check()),
        ..Default::default()
    };
    let _ = runtime().block_on(skystream_sql::plan_script_with(sql, registry(), &options));
});
