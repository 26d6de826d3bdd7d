//! TLS on the API port: a host serving a certificate signed by a test CA
//! (made here with rcgen), reached by the Rust client, a remote worker, raw
//! HTTP/1.1 and the command line over TLS; plaintext and untrusted clients
//! refused; and a server that would listen beyond loopback in plaintext
//! refuses to start.

mod common;
mod process;

use common::{Backend, TestHost};
use process::{HostProcess, weft, weft_env};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_rustls::rustls;
use weft::api::{Limits, ServeOptions, ServerTls, Tokens};
use weft::client::{Client, ClientTls};
use weft::worker::{Worker, WorkerOptions};
use weft::{Activities, ActivityContext, ActivityError};

/// A CA, and a certificate it signed for `localhost` and 127.0.0.1 with its
/// key, all PEM.
struct Certificates {
    ca: String,
    cert: String,
    key: String,
}

fn certificates() -> Certificates {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "weft test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    Certificates {
        ca: ca_cert.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_http_and_workers_speak_tls_and_plaintext_and_strangers_are_refused() {
    let pem = certificates();
    let mut activities_of_worker = Activities::new();
    activities_of_worker.register("greet", |_: ActivityContext, name: String| async move {
        Ok::<_, ActivityError>(format!("Hello, {name}!"))
    });
    let t = TestHost::new(Backend::Sqlite, Activities::new()).await;
    t.deploy("hello-workflow").await;
    let tls = ServerTls::from_pem(pem.cert.as_bytes(), pem.key.as_bytes()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn({
        let host = t.host.clone();
        async move {
            weft::api::serve_tls(host, listener, &tls, Tokens::open(), async {
                let _ = stopped.await;
            })
            .await
        }
    });
    let address = format!("https://localhost:{port}");
    let trusted = ClientTls::with_ca_pem(pem.ca.clone());

    // A worker and a client, both over TLS: a workflow runs end to end.
    let options = WorkerOptions {
        worker_id: "tls-worker".into(),
        tls: trusted.clone(),
        ..WorkerOptions::default()
    };
    let worker = Worker::connect(&address, options).unwrap();
    let (stop_worker, worker_stopped) = oneshot::channel::<()>();
    let worker = tokio::spawn(async move {
        worker
            .run(activities_of_worker, async {
                let _ = worker_stopped.await;
            })
            .await
    });
    let client = Client::connect_with(&address, None, &trusted)
        .await
        .unwrap();
    let mut spec = weft::client::StartSpec::new("hello", "hello-tls", json!("Ada"));
    spec.module = Some("hello-workflow".into());
    let (_, run) = client
        .start_and_wait(spec, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        (run.status.as_str(), run.output),
        ("completed", Some(json!("Hello, Ada!")))
    );

    // HTTP/1.1 over the same port, chosen by ALPN.
    let response = http1_over_tls(port, &pem.ca, "/v1/workflows/hello-tls/result").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("Hello, Ada!"), "{response}");

    // A plaintext client gets no answer from the TLS port.
    let plain = async {
        let c = Client::connect(&format!("http://127.0.0.1:{port}"), None).await?;
        c.list(None, None, None, 10).await
    };
    let plain = tokio::time::timeout(Duration::from_secs(30), plain)
        .await
        .expect("a plaintext client is answered (refused) in time");
    assert!(plain.is_err(), "{plain:?}");

    // A client that does not trust the test CA refuses the host.
    let stranger = async {
        let c = Client::connect(&address, None).await?;
        c.list(None, None, None, 10).await
    };
    let stranger = tokio::time::timeout(Duration::from_secs(30), stranger)
        .await
        .expect("an untrusting client gives up in time");
    assert!(stranger.is_err(), "{stranger:?}");

    // A CA for a plaintext address is a mistake worth naming.
    let e = Client::connect_with(&format!("http://127.0.0.1:{port}"), None, &trusted)
        .await
        .err()
        .expect("a CA file with http:// is refused");
    assert!(e.message.contains("https://"), "{e:?}");

    let _ = stop_worker.send(());
    worker.await.unwrap().unwrap();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    t.stop().await;
}

/// `GET path` over HTTP/1.1 in TLS (ALPN `http/1.1`), trusting `ca`: the
/// whole response as text.
/// Over TLS the web UI's cookies are `Secure`: the sign-in form's CSRF
/// cookie (and the session cookie, set the same way) never travel in
/// plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_cookies_are_secure_over_tls() {
    let pem = certificates();
    let t = TestHost::new(Backend::Sqlite, Activities::new()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let options = ServeOptions {
        tokens: Tokens::new(vec![], vec!["user-secret".into()]),
        limits: Limits::default(),
        tls: Some(ServerTls::from_pem(pem.cert.as_bytes(), pem.key.as_bytes()).unwrap()),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(weft::api::serve_with(
        t.host.clone(),
        listener,
        options,
        async {
            let _ = stopped.await;
        },
    ));
    let response = http1_over_tls(port, &pem.ca, "/ui/login").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let cookie = response
        .lines()
        .find(|l| l.starts_with("set-cookie: weft_login_csrf="))
        .unwrap_or_else(|| panic!("no CSRF cookie: {response}"));
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly; SameSite=Strict"), "{cookie}");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    t.stop().await;
}

async fn http1_over_tls(port: u16, ca: &str, path: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut response))
        .await
        .expect("the response comes in time")
        .ok();
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn the_command_line_serves_and_speaks_tls_and_refuses_plaintext_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let pem = certificates();
    let (ca, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    );
    std::fs::write(&ca, &pem.ca).unwrap();
    std::fs::write(&cert, &pem.cert).unwrap();
    std::fs::write(&key, &pem.key).unwrap();
    let db = dir.path().join("weft.db");
    let (db, ca, cert, key) = (
        db.to_str().unwrap(),
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );

    // Beyond loopback without TLS: refused, saying how to fix it.
    let refused = weft_env(
        "http://127.0.0.1:1",
        &["server", "--database", db, "--listen", "0.0.0.0:0"],
        &[("WEFT_ADMIN_TOKENS", "admin"), ("WEFT_TOKENS", "user")],
    );
    assert!(refused.failed().contains("--tls-cert"), "{refused:?}");
    assert!(
        refused.failed().contains("--insecure-plaintext"),
        "{refused:?}"
    );

    // A certificate that is not PEM: refused, naming the file.
    let refused = weft(
        "http://127.0.0.1:1",
        &["dev", "--database", db, "--tls-cert", db, "--tls-key", key],
    );
    assert!(refused.failed().contains("cert"), "{refused:?}");

    let host = HostProcess::start(
        &[
            "dev",
            "--database",
            db,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ],
        &[],
    );
    assert!(host.address.starts_with("https://"), "{}", host.address);
    let address = host.address.replace("127.0.0.1", "localhost");
    let listed = weft_env(
        &address,
        &["list", "--output", "json"],
        &[("WEFT_CA_FILE", ca)],
    );
    assert_eq!(listed.json(), json!({"runs": []}));
    // The system's roots do not know the test CA.
    let untrusted = weft(&address, &["list"]);
    assert!(untrusted.failed().contains("--ca-file"), "{untrusted:?}");
}

/// `sslmode=require` in a Postgres URL gives the store encrypted
/// connections (Postgres says so in `pg_stat_ssl`); `verify-full` against a
/// server whose certificate no trusted CA signed is refused, not downgraded.
#[tokio::test]
async fn a_postgres_url_with_sslmode_connects_encrypted_or_not_at_all() {
    let url = common::database_url();
    let with = |mode: &str| {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}sslmode={mode}")
    };
    let schema = common::unique("weft_tls");
    let options = weft::store::PostgresOptions {
        schema: Some(schema.clone()),
        application_name: Some(schema.clone()),
    };
    let store = weft::store::PostgresStore::connect_with(&with("require"), options)
        .await
        .unwrap_or_else(|e| {
            panic!("sslmode=require: {e} (the Postgres at DATABASE_URL must have ssl = on, as Debian's has by default)")
        });
    use weft::store::RunStore;
    store.next_timer_at().await.unwrap();

    let plain = sqlx::PgPool::connect(&url).await.unwrap();
    let (connections, encrypted): (i64, Option<bool>) = sqlx::query_as(
        "SELECT count(*), bool_and(s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
          WHERE a.application_name = $1",
    )
    .bind(&schema)
    .fetch_one(&plain)
    .await
    .unwrap();
    assert!(connections > 0, "the store holds no connection");
    assert_eq!(encrypted, Some(true), "{connections} connections");
    store.close().await;

    let Err(refused) =
        weft::store::PostgresStore::connect_in_schema(&with("verify-full"), &schema).await
    else {
        panic!("verify-full accepted a certificate no trusted CA signed");
    };
    assert!(
        matches!(&refused, weft::store::StoreError::Refused(m) if m.contains("sslrootcert")),
        "{refused}"
    );

    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(&plain)
    .await
    .unwrap();
    plain.close().await;
}
