//! Hostile HTTP input against an in-process server on 127.0.0.1: random and
//! mutated bodies, queries and ids on every endpoint (bounded, deterministic
//! xorshift). Every answer must be a success or a Scaleway-shaped 4xx,
//! never a 5xx, and the server must keep serving. Then slow and greedy
//! clients: headers or a body trickled byte by byte, idle connections, one
//! connection more than the limit.

use std::io::{Read, Write};
use std::net::TcpStream;

mod common;
use std::time::{Duration, Instant};

use serde_json::Value;

const TOKEN: &str = "11111111-1111-1111-1111-111111111111";

fn server() -> common::InProcess {
    server_with("")
}

/// A server whose `[api]` section gets `api_extra` lines.
fn server_with(api_extra: &str) -> common::InProcess {
    common::serve(|state| common::one_host_config(state, TOKEN, api_extra, 50))
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }
}

#[test]
fn hostile_requests_get_4xx_never_5xx() {
    let server = server();
    let url = server.url.clone();
    let agent = ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(10))
        .build();
    let call = |method: &str, path: &str, body: Option<&[u8]>| -> (u16, String) {
        let req = agent
            .request(method, &format!("{url}{path}"))
            .set("X-Auth-Token", TOKEN)
            .set("Content-Type", "application/json");
        let r = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        match r {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
            Err(e) => panic!("{method} {path}: transport error {e}"),
        }
    };
    // Some real resources so ids and references resolve sometimes.
    let (s, g) = call(
        "POST",
        "/s2s-vpn/v1alpha1/regions/fr-par/vpn-gateways",
        Some(br#"{"name":"g","gateway_type":"VGW-S","private_network_id":"pn1"}"#),
    );
    assert_eq!(s, 200, "{g}");
    let gid = serde_json::from_str::<Value>(&g).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let seeds: Vec<String> = vec![
        r#"{"name":"c","asn":65000,"ipv4_public":"203.0.113.1","ipv6_public":"2001:db8:f::1","tags":["a"]}"#.into(),
        r#"{"name":"r","is_ipv6":false,"prefix_filter_in":["10.0.0.0/8"],"prefix_filter_out":["198.51.100.0/24"]}"#.into(),
        format!(
            r#"{{"name":"x","is_ipv6":false,"initiation_policy":"vpn_gateway","ikev2_ciphers":[{{"encryption":"aes256gcm","dh_group":"ecp256"}}],"esp_ciphers":[{{"encryption":"aes256gcm"}}],"vpn_gateway_id":"{gid}","customer_gateway_id":"x","bgp_config_ipv4":{{"routing_policy_id":"y","private_ip":"169.254.0.1/30","peer_private_ip":"169.254.0.2/30"}}}}"#
        ),
        r#"{"routing_policy_v4":"x","secret":{"id":"s","revision":1},"generate_revision":true}"#.into(),
        r#"{"name":"g","gateway_type":"VGW-S","private_network_id":"pn1","public_tunnel_config":{"single_ipv6_tunnel":{"ipam_id":"ip6"}}}"#.into(),
    ];
    let paths = [
        "vpn-gateways",
        "customer-gateways",
        "routing-policies",
        "connections",
        "vpn-gateway-types",
    ];
    let actions = [
        "renew-psk",
        "change-psk",
        "set-routing-policy",
        "detach-routing-policy",
        "enable-route-propagation",
        "disable-route-propagation",
        "bogus",
    ];
    let queries = [
        "",
        "?page=0&page_size=0",
        "?page=99999999999",
        "?page_size=101",
        "?order_by=name_desc&tags=a&statuses=x",
        "?is_ipv6=True&route_propagation_enabled=maybe",
        "?name=%ff%fe&ipv6=1",
    ];
    const CHARS: &[u8] = b"0123456789:/.,{}[]-af\" \\";
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for i in 0..1500 {
        let base = "/s2s-vpn/v1alpha1/regions/fr-par/";
        let body: Vec<u8> = if i % 3 == 0 {
            let n = rng.below(200);
            (0..n)
                .map(|_| u8::try_from(rng.next() & 0xff).unwrap())
                .collect()
        } else {
            let mut d = seeds[rng.below(seeds.len())].clone().into_bytes();
            for _ in 0..=rng.below(4) {
                let pos = rng.below(d.len());
                d[pos] = CHARS[rng.below(CHARS.len())];
            }
            d
        };
        let coll = paths[rng.below(paths.len())];
        let id = if rng.below(2) == 0 {
            gid.clone()
        } else {
            format!("{:x}", rng.next())
        };
        let (method, path, with_body) = match rng.below(7) {
            0 => (
                "GET",
                format!("{base}{coll}{}", queries[rng.below(queries.len())]),
                false,
            ),
            1 => ("POST", format!("{base}{coll}"), true),
            2 => ("GET", format!("{base}{coll}/{id}"), false),
            3 => ("PATCH", format!("{base}{coll}/{id}"), true),
            4 => ("DELETE", format!("{base}{coll}/{id}"), false),
            5 => (
                "POST",
                format!(
                    "{base}connections/{id}/{}",
                    actions[rng.below(actions.len())]
                ),
                true,
            ),
            _ => (
                "GET",
                format!(
                    "/secret-manager/v1beta1/regions/fr-par/secrets/{id}/versions/{}/access",
                    rng.next() % 5
                ),
                false,
            ),
        };
        let (status, text) = call(method, &path, with_body.then_some(body.as_slice()));
        assert!(
            status < 500,
            "{method} {path} body {:?} -> {status} {text}",
            String::from_utf8_lossy(&body)
        );
        if status >= 400 {
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("{method} {path}: error body is not JSON ({e}): {text}")
            });
            assert!(v["type"].is_string() && v["message"].is_string(), "{text}");
        }
    }
    // A body over the limit is refused in the same shape.
    let big = vec![b' '; 70 * 1024];
    let (s, t) = call(
        "POST",
        "/s2s-vpn/v1alpha1/regions/fr-par/routing-policies",
        Some(&big),
    );
    assert_eq!(s, 413, "{t}");
    assert_eq!(
        serde_json::from_str::<Value>(&t).unwrap()["type"],
        "invalid_request_error"
    );
    // Still serving, and the store is consistent.
    let (s, t) = call("GET", "/s2s-vpn/v1alpha1/regions/fr-par/vpn-gateways", None);
    assert_eq!(s, 200, "{t}");
}

/// Limits small enough for a test: 1 s for headers and for a body, three
/// connections at once.
const TIGHT: &str = "header_timeout_secs = 1\nbody_timeout_secs = 1\nmax_connections = 3";

fn connect(url: &str) -> TcpStream {
    let s = TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    // Only a bound on a broken server, never a pass criterion.
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// True once the server has closed `s` (EOF or reset), without waiting.
fn closed_by_server(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let r = (&*s).read(&mut b);
    s.set_nonblocking(false).unwrap();
    match r {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {TOKEN}\r\n\r\n")
}

/// Reads one response with a Content-Length body; returns the status.
fn read_response(s: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                return head[9..12].parse().unwrap();
            }
        }
        let n = s.read(&mut b).expect("no response within 30 s");
        assert!(
            n > 0,
            "closed before a whole response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&b[..n]);
    }
}

#[test]
fn slow_headers_and_idle_connections_are_closed() {
    let server = server_with(TIGHT);
    let url = server.url.clone();
    // A connection that never sends anything.
    let idle = connect(&url);
    // Slowloris: headers one byte every 100 ms, never finished (bounded:
    // at most 600 bytes, a minute).
    let mut slow = connect(&url);
    let trickle = b"GET /s2s-vpn/v1alpha1/regions/fr-par/vpn-gateways HTTP/1.1\r\nX-Padding: ";
    let started = Instant::now();
    let mut cut = false;
    for i in 0..600 {
        let byte = trickle.get(i).copied().unwrap_or(b'a');
        if slow.write_all(&[byte]).is_err() || closed_by_server(&slow) {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        cut,
        "a client trickling headers kept its connection for {:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        !String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 2"),
        "{rest:?}"
    );
    // The silent one was closed by then too (it started first).
    let mut idle = idle;
    let mut b = [0u8; 1];
    assert!(
        matches!(idle.read(&mut b), Ok(0) | Err(_)),
        "idle connection left open"
    );
    // The server still serves.
    let mut ok = connect(&url);
    ok.write_all(get("/s2s-vpn/v1alpha1/regions/fr-par/vpn-gateways").as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut ok), 200);
}

#[test]
fn slow_body_is_refused() {
    let server = server_with(TIGHT);
    let url = server.url.clone();
    let mut s = connect(&url);
    let head = format!(
        "POST /s2s-vpn/v1alpha1/regions/fr-par/routing-policies HTTP/1.1\r\nHost: x\r\n\
         X-Auth-Token: {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    // The body one byte every 100 ms (bounded: 400 bytes, 40 s), reading
    // whatever the server answers meanwhile.
    s.set_nonblocking(true).unwrap();
    let mut answer = Vec::new();
    let mut b = [0u8; 1024];
    for _ in 0..400 {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&b[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") || s.write_all(b" ").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
}

#[test]
fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let server = server_with(TIGHT);
    let url = server.url.clone();
    let path = "/s2s-vpn/v1alpha1/regions/fr-par/vpn-gateways";
    // Three keep-alive connections, each served once, then left idle: the
    // limit is reached.
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut c = connect(&url);
            c.write_all(get(path).as_bytes()).unwrap();
            assert_eq!(read_response(&mut c), 200);
            c
        })
        .collect();
    // The fourth is accepted by the kernel but not served while they hold
    // their slots: it gets its answer only once the server has closed one
    // of them (the idle ones time out).
    let mut extra = connect(&url);
    extra.write_all(get(path).as_bytes()).unwrap();
    assert_eq!(read_response(&mut extra), 200);
    let closed = held.iter().filter(|c| closed_by_server(c)).count();
    assert!(
        closed >= 1,
        "the fourth connection was served while three others held every slot"
    );
    held.clear();
}

#[test]
fn clients_that_do_not_read_their_answers_lose_their_slot() {
    let server = server_with(TIGHT);
    let url = server.url.clone();
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    // A big answer: 100 routing policies with the longest tags (~900 KB
    // for one list page); asked for ten times in a row (pipelined), far
    // more than the kernel buffers on both sides (the sender's grows to
    // 4 MiB) for a client with a 4 KiB receive buffer.
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .max_idle_connections(0)
        .build();
    let tags: Vec<String> = (0..64)
        .map(|i| format!("{i:02}{}", "t".repeat(126)))
        .collect();
    for i in 0..100 {
        let body = serde_json::json!({
            "name": format!("{i:03}{}", "n".repeat(250)),
            "is_ipv6": false,
            "tags": tags,
            "prefix_filter_in": ["203.0.113.0/24"],
            "prefix_filter_out": ["198.51.100.0/24"],
        });
        let r = agent
            .post(&format!(
                "{url}/s2s-vpn/v1alpha1/regions/fr-par/routing-policies"
            ))
            .set("X-Auth-Token", TOKEN)
            .send_json(body)
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Three clients ask for the big page and never read: every slot taken.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stalled: Vec<TcpStream> = (0..3)
        .map(|_| {
            let s = rt.block_on(async {
                let sock = tokio::net::TcpSocket::new_v4().unwrap();
                sock.set_recv_buffer_size(4096).unwrap();
                sock.connect(addr).await.unwrap().into_std().unwrap()
            });
            s.set_nonblocking(false).unwrap();
            let req = get("/s2s-vpn/v1alpha1/regions/fr-par/routing-policies?page_size=100");
            (&s).write_all(req.repeat(10).as_bytes()).unwrap();
            s
        })
        .collect();
    // A fourth client is served once the server gave up on one of them.
    let mut extra = connect(&url);
    extra
        .write_all(get("/s2s-vpn/v1alpha1/regions/fr-par/vpn-gateways").as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut extra), 200);
    drop(stalled);
}
