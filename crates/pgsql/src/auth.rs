//! Connection start: password authentication (cleartext, for loopback or behind TLS
//! termination) or trust, and the parameters a server reports to its clients.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::prelude::SessionContext;
use datafusion_postgres::pgwire::api::auth::{
    DefaultServerParameterProvider, LoginInfo, StartupHandler, finish_authentication,
    protocol_negotiation, save_startup_parameters_to_metadata,
};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::{
    ClientInfo, PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::startup::Authentication;
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::{Sink, SinkExt};
use tracing::info;

/// The client-metadata key datafusion-postgres keeps a session's `statement_timeout` in.
pub(crate) const STATEMENT_TIMEOUT_KEY: &str = "statement_timeout_ms";

/// The PostgreSQL release whose behaviour clients should assume.
pub(crate) const PG_VERSION: &str = "16.6";

/// The handlers for one server: its session service and its startup handler.
pub(crate) struct Handlers {
    service: Arc<DfSessionService>,
    startup: Arc<Startup>,
}

impl Handlers {
    pub(crate) fn new(
        ctx: Arc<SessionContext>,
        hooks: Vec<Arc<dyn QueryHook>>,
        user: String,
        password: Option<String>,
        default_timeout: Duration,
    ) -> Self {
        Self {
            service: Arc::new(DfSessionService::new_with_hooks(ctx, hooks)),
            startup: Arc::new(Startup {
                user,
                password,
                default_timeout,
                pids: RandomPidSecretKeyGenerator::default(),
            }),
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }
}

pub(crate) struct Startup {
    user: String,
    password: Option<String>,
    default_timeout: Duration,
    pids: RandomPidSecretKeyGenerator,
}

/// Equal strings, compared without an early exit.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Startup {
    fn parameters() -> DefaultServerParameterProvider {
        let mut p = DefaultServerParameterProvider::default();
        p.server_version = PG_VERSION.to_string();
        p.search_path = "lake, live, public".to_string();
        p.is_superuser = false;
        p.default_transaction_read_only = true;
        p
    }

    async fn finish<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, key) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, key);
        client.metadata_mut().insert(
            STATEMENT_TIMEOUT_KEY.to_string(),
            self.default_timeout.as_millis().to_string(),
        );
        let login = LoginInfo::from_client_info(client);
        info!(
            user = login.user().unwrap_or(""),
            host = login.host(),
            "SQL client connected"
        );
        finish_authentication(client, &Self::parameters()).await
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if self.password.is_some() {
                    client.set_state(PgWireConnectionState::AuthenticationInProgress);
                    client
                        .send(PgWireBackendMessage::Authentication(
                            Authentication::CleartextPassword,
                        ))
                        .await?;
                } else {
                    self.finish(client).await?;
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(pwd) => {
                let Some(expected) = &self.password else {
                    return Ok(());
                };
                let pwd = pwd.into_password()?;
                let user = LoginInfo::from_client_info(client)
                    .user()
                    .unwrap_or("")
                    .to_string();
                if user == self.user && same(pwd.password.as_bytes(), expected.as_bytes()) {
                    self.finish(client).await?;
                } else {
                    info!(user = %user, "SQL client refused: wrong user or password");
                    return Err(PgWireError::InvalidPassword(user));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn comparison() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret1"));
        assert!(!same(b"", b"x"));
        assert!(same(b"", b""));
    }
}
