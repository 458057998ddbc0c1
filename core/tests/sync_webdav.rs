//! Sync through a real WebDAV server (Debian's lighttpd with mod_webdav,
//! started here on 127.0.0.1 with a temporary root; installed by
//! tests/toolchains/webdav.sh): two devices converge, the server's files
//! hold nothing readable and only the padded sizes, and a server that goes
//! away mid-way stops a sync that the next one finishes.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sync_backend::pair;
use common::*;
use hearth_core::sync::records::BLOB_SIZES;
use hearth_core::sync::webdav::WebDavTransport;
use hearth_core::*;

struct Server {
    child: Child,
    port: u16,
    _conf: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lighttpd() -> PathBuf {
    let path = std::env::var("HEARTH_LIGHTTPD").map(PathBuf::from).unwrap_or_else(|_| "/usr/sbin/lighttpd".into());
    assert!(path.exists(), "lighttpd is missing: bash tests/toolchains/webdav.sh installs it");
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(root: &Path, port: u16) -> Server {
    let conf = tempfile::tempdir().unwrap();
    let file = conf.path().join("lighttpd.conf");
    std::fs::write(
        &file,
        format!(
            "server.document-root = \"{}\"\nserver.bind = \"127.0.0.1\"\nserver.port = {port}\n\
             server.modules = (\"mod_webdav\")\nwebdav.activate = \"enable\"\nwebdav.is-readonly = \"disable\"\n\
             server.errorlog = \"{}\"\n",
            root.display(),
            conf.path().join("error.log").display()
        ),
    )
    .unwrap();
    let child = Command::new(lighttpd()).args(["-D", "-f"]).arg(&file).stdout(Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "lighttpd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { child, port, _conf: conf }
}

fn transport(port: u16) -> WebDavTransport {
    WebDavTransport::new(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(10))
}

fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn two_devices_sync_through_a_webdav_server_that_reads_nothing() {
    let root = tempfile::tempdir().unwrap();
    let server = start(root.path(), free_port());
    let dav = Arc::new(transport(server.port));
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let phone = open(a.path(), KEY_A).unwrap();
    let tv = open(b.path(), KEY_B).unwrap();
    phone.create_sync_group().unwrap();
    pair(&phone, &tv);
    let events: Vec<Event> =
        (0..300).map(|i| event(&format!("tt{:07}", 500 + i), EventKind::Play, T0 + i * 60_000)).collect();
    phone.record_batch(events.clone()).unwrap();
    phone.set_blocked_categories(vec!["Horror".into()]).unwrap();
    tv.record(event("live-football", EventKind::Complete, T0 + 1)).unwrap();
    for d in [&phone, &tv, &phone] {
        let report = d.sync(dav.clone(), SyncOptions::default()).unwrap();
        assert!(report.complete && report.refused.is_empty(), "{report:?}");
    }
    assert_eq!(tv.event_count().unwrap(), 301);
    assert_eq!(phone.event_count().unwrap(), 301);
    assert_eq!(tv.settings().unwrap().blocked_categories, vec!["Horror".to_string()]);

    // What the server keeps, as its operator would read it.
    let held = files(root.path());
    assert!(held.len() >= 2);
    let mut needles: Vec<Vec<u8>> =
        vec![b"live-football".to_vec(), b"Horror".to_vec(), b"blocked".to_vec(), b"en-GB".to_vec()];
    for e in &events {
        needles.push(e.item_id.clone().into_bytes());
        needles.push(e.timestamp_ms.to_string().into_bytes());
        needles.push(e.timestamp_ms.to_le_bytes().to_vec());
    }
    for (name, bytes) in &held {
        assert!(BLOB_SIZES.contains(&bytes.len()), "{name}: {} bytes", bytes.len());
        for n in &needles {
            assert!(
                !contains(bytes, n) && !contains(name.as_bytes(), n),
                "{name} holds {:?}",
                String::from_utf8_lossy(n)
            );
        }
    }

    // The server goes away mid-way: the sync stops and says so; the next
    // one, with the server back, finishes, and nothing is lost or doubled.
    phone
        .record_batch((0..50).map(|i| event(&format!("late-{i}"), EventKind::Play, T0 + 10_000_000 + i)).collect())
        .unwrap();
    let port = server.port;
    drop(server);
    let report = phone.sync(dav.clone(), SyncOptions::default()).unwrap();
    assert!(!report.complete && report.transport_error.is_some(), "{report:?}");
    let server = start(root.path(), port);
    for d in [&phone, &tv] {
        let report = d.sync(Arc::new(transport(server.port)), SyncOptions::default()).unwrap();
        assert!(report.complete && report.refused.is_empty(), "{report:?}");
    }
    assert_eq!(tv.event_count().unwrap(), 351);
    assert_eq!(phone.event_count().unwrap(), 351);
}

/// A server that drips its listing, a byte at a time within every read
/// timeout, does not hold the sync: the listing gives up at the transport's
/// timeout, as a whole.
#[test]
fn a_server_that_drips_its_listing_is_given_up_on_in_time() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = [0u8; 1024];
        let _ = conn.read(&mut request);
        let started = Instant::now();
        for byte in b"HTTP/1.0 207 Multi-Status\r\n\r\n<?xml version=\"1.0\"?>".iter().cycle() {
            if conn.write_all(&[*byte]).is_err() || started.elapsed() > Duration::from_secs(10) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let dav = WebDavTransport::new(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(1));
    let started = Instant::now();
    let listed = dav.list();
    let took = started.elapsed();
    assert!(matches!(listed, Err(SyncTransportError::Unavailable { .. })), "{listed:?}");
    assert!(took < Duration::from_secs(3), "the listing took {took:?}");
    drop(dav);
    server.join().unwrap();
}
