use super::*;

/// lighttpd's answer, as it gave it (trimmed to two entries).
const LIGHTTPD: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:multistatus xmlns:D="DAV:" xmlns:ns0="urn:uuid:c2f41010-65b3-11d1-a29f-00aa00c14882/">
<D:response>
<D:href>/</D:href>
<D:propstat>
<D:prop>
<D:getcontentlength>4096</D:getcontentlength><D:getcontenttype>httpd/unix-directory</D:getcontenttype><D:resourcetype><D:collection/></D:resourcetype></D:prop>
<D:status>HTTP/1.1 200 OK</D:status>
</D:propstat>
</D:response>
<D:response>
<D:href>/abc-0000000001</D:href>
<D:propstat>
<D:prop>
<D:getcontentlength>5</D:getcontentlength><D:getetag>"700247064"</D:getetag><D:resourcetype/></D:prop>
<D:status>HTTP/1.1 200 OK</D:status>
</D:propstat>
</D:response>
</D:multistatus>"#;

#[test]
fn a_listing_gives_the_files_and_leaves_out_collections() {
    assert_eq!(parse_multistatus(LIGHTTPD).unwrap(), vec![SyncBlob { name: "abc-0000000001".into(), size: 5 }]);
    // Other prefixes, absolute hrefs, escapes, entries without a length.
    let other = r#"<multistatus xmlns="DAV:"><response><href>http://h/dav/x/keys-0000000002</href>
        <propstat><prop><getcontentlength>1057</getcontentlength></prop></propstat></response>
        <response><href>/dav/x/a%2Db&amp;c</href><propstat><prop><lp1:getcontentlength>7</lp1:getcontentlength></prop></propstat></response>
        <response><href>/dav/x/nolength</href></response></multistatus>"#;
    assert_eq!(
        parse_multistatus(other).unwrap(),
        vec![SyncBlob { name: "keys-0000000002".into(), size: 1057 }, SyncBlob { name: "a-b&c".into(), size: 7 }]
    );
}

#[test]
fn anything_else_is_refused_or_read_as_empty_without_a_panic() {
    for bad in ["", "<", "<html>", "no tags", "<D:multistatus", "<a><b>"] {
        assert!(parse_multistatus(bad).is_err(), "{bad:?}");
    }
    for odd in [
        "<multistatus><response><href>%</href><getcontentlength>1</getcontentlength></response></multistatus>",
        "<multistatus><response><href>/%zz</href><getcontentlength>x</getcontentlength></response></multistatus>",
        "<multistatus><response/><href>/a</href></multistatus>",
        "<multistatus><response><href>/é%C3%A9</href><getcontentlength>99999999999999999999</getcontentlength></response></multistatus>",
    ] {
        assert!(parse_multistatus(odd).is_ok(), "{odd:?}");
    }
}

#[test]
fn an_answer_gives_its_status_and_body() {
    assert_eq!(
        parse_reply(b"HTTP/1.0 207 Multi-Status\r\nContent-Type: x\r\n\r\n<body>").unwrap(),
        (207, &b"<body>"[..])
    );
    for bad in [
        &b""[..],
        b"HTTP/1.0 207",
        b"HTTP/2 207 x\r\n\r\n",
        b"HTTP/1.1 abc\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello",
        b"\xff\xfe\r\n\r\n",
    ] {
        assert!(parse_reply(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}
