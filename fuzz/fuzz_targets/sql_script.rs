//! The SQL front end: a pipeline script as the HTTP API receives it, parsed, checked against
//! the shape limits and planned with the API's sandbox. Any panic, stack overflow or hang is a
//! bug; errors are the expected answer to most inputs.
#![no_main]

use std::sync::{Arc, OnceLock};

use arrow::datatypes::SchemaRef;
use futures::future::BoxFuture;
use libfuzzer_sys::fuzz_target;
use skystream_engine::connector::{Connector, ConnectorRegistry, Resource, TableDef};
use skystream_engine::source::{Source, SourceContext};
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

/// The shipped connectors, but for the synthetic source's generator: building its vocabulary
/// takes seconds in an unoptimised build, and it is not what is fuzzed (its options are still
/// parsed and checked).
fn registry() -> &'static ConnectorRegistry {
    static R: OnceLock<ConnectorRegistry> = OnceLock::new();
    R.get_or_init(|| {
        let mut r = skystream_registry::registry();
        let synthetic = r.get("synthetic").unwrap();
        r.register(Arc::new(NoGenerator(synthetic)));
        r
    })
}

struct NoGenerator(Arc<dyn Connector>);

impl Connector for NoGenerator {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn resources(&self, table: &TableDef) -> Vec<Resource> {
        self.0.resources(table)
    }
    fn description(&self) -> &str {
        self.0.description()
    }
    fn is_source(&self) -> bool {
        true
    }
    fn source_schema(&self, table: &TableDef) -> skystream_engine::Result<SchemaRef> {
        self.0.source_schema(table)
    }
    fn create_source(
        &self,
        table: &TableDef,
        projection: &[usize],
    ) -> skystream_engine::Result<Box<dyn Source>> {
        let schema = self.0.source_schema(table)?;
        Ok(Box::new(Nothing(Arc::new(schema.project(projection)?))))
    }
}

/// A source that never runs (planning only).
struct Nothing(SchemaRef);

impl Source for Nothing {
    fn schema(&self) -> SchemaRef {
        self.0.clone()
    }
    fn run(
        self: Box<Self>,
        _ctx: SourceContext,
    ) -> BoxFuture<'static, skystream_engine::Result<()>> {
        Box::pin(async { Ok(()) })
    }
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
