//! A DNS server under the test's control, on a UDP port of 127.0.0.1:
//! each name is answered from a script, one step per lookup, so its answer
//! can change between lookups (DNS rebinding) or point anywhere (the cloud
//! metadata address). Answers have a TTL of 0, so a resolver keeps none.
//! It understands what a stub resolver sends: one question, of type A or
//! AAAA; everything else is answered NXDOMAIN or NOTIMP. It counts what it
//! was asked. The thread stops when the server is dropped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

#[derive(Default)]
struct Script {
    /// Per name (lowercase, no trailing dot): the answers, one per lookup;
    /// the last is repeated once the others are spent.
    steps: HashMap<String, Vec<Vec<IpAddr>>>,
    /// Per name: A lookups answered so far.
    lookups: HashMap<String, usize>,
    /// Every question, in order: (name, type).
    asked: Vec<(String, u16)>,
}

pub struct Dns {
    /// Where the server listens (127.0.0.1, an ephemeral port).
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    stop: Arc<AtomicBool>,
}

impl Dns {
    pub fn start() -> Dns {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let script = Arc::new(Mutex::new(Script::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, done) = (script.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !done.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(answer) = respond(&buf[..n], &s) {
                    let _ = socket.send_to(&answer, peer);
                }
            }
        });
        Dns { addr, script, stop }
    }

    /// Answers lookups of `name` with `steps`, one per A lookup, the last
    /// again once the others are spent.
    pub fn answer(&self, name: &str, steps: &[&[IpAddr]]) {
        let mut s = self.script.lock().unwrap();
        s.steps.insert(
            name.to_ascii_lowercase(),
            steps.iter().map(|a| a.to_vec()).collect(),
        );
        s.lookups.remove(&name.to_ascii_lowercase());
    }

    /// How many A lookups of `name` were answered.
    pub fn lookups(&self, name: &str) -> usize {
        let s = self.script.lock().unwrap();
        s.lookups
            .get(&name.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// Every question asked so far: (name, type: 1 for A, 28 for AAAA).
    pub fn asked(&self) -> Vec<(String, u16)> {
        self.script.lock().unwrap().asked.clone()
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The question of a query: (name, type, class, where the question ends).
fn question(q: &[u8]) -> Option<(String, u16, u16, usize)> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        // Compression never appears in a question a stub sends.
        if len & 0xc0 != 0 {
            return None;
        }
        labels.push(String::from_utf8_lossy(q.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*q.get(at)?, *q.get(at + 1)?]);
    let qclass = u16::from_be_bytes([*q.get(at + 2)?, *q.get(at + 3)?]);
    Some((labels.join("."), qtype, qclass, at + 4))
}

/// The response to one query, from the script.
fn respond(q: &[u8], script: &Mutex<Script>) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    let (name, qtype, _class, end) = question(q)?;
    let mut s = script.lock().unwrap();
    s.asked.push((name.clone(), qtype));
    let opcode = (q[2] >> 3) & 0x0f;
    let mut rcode = 0u8;
    let mut answers: Vec<IpAddr> = Vec::new();
    if opcode != 0 {
        rcode = 4; // NOTIMP
    } else if let Some(steps) = s.steps.get(&name).cloned() {
        let seen = s.lookups.get(&name).copied().unwrap_or(0);
        let step = &steps[seen.min(steps.len() - 1)];
        match qtype {
            TYPE_A => {
                s.lookups.insert(name.clone(), seen + 1);
                answers = step.iter().filter(|a| a.is_ipv4()).copied().collect();
            }
            TYPE_AAAA => {
                // The step the last A lookup took (or the first).
                let step = &steps[seen.saturating_sub(1).min(steps.len() - 1)];
                answers = step.iter().filter(|a| a.is_ipv6()).copied().collect();
            }
            _ => {}
        }
    } else {
        rcode = 3; // NXDOMAIN
    }
    let mut r = Vec::with_capacity(512);
    r.extend_from_slice(&q[0..2]);
    // QR, the query's opcode and RD; AA, RA.
    r.push(0x80 | (q[2] & 0x79) | 0x04);
    r.push(0x80 | rcode);
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&q[12..end]);
    for ip in answers {
        // A pointer to the question's name.
        r.extend_from_slice(&[0xc0, 0x0c]);
        let (kind, data) = match ip {
            IpAddr::V4(v4) => (TYPE_A, v4.octets().to_vec()),
            IpAddr::V6(v6) => (TYPE_AAAA, v6.octets().to_vec()),
        };
        r.extend_from_slice(&kind.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&0u32.to_be_bytes());
        r.extend_from_slice(&(data.len() as u16).to_be_bytes());
        r.extend_from_slice(&data);
    }
    Some(r)
}
