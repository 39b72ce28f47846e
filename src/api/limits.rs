//! Token buckets for the guard: one per API key (generous), one per client network (strict),
//! bounded in memory, and the client address as seen through trusted proxies.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, RandomState},
    net::{IpAddr, Ipv6Addr},
    sync::Mutex,
    time::{Duration, Instant},
};

/// Independent locks the buckets are spread over, so one busy client does not serialise others.
const SHARDS: usize = 16;

/// A bucket's level and when it was last topped up.
#[derive(Clone, Copy)]
struct Bucket {
    /// Tokens left (fractional: refilled continuously).
    tokens: f64,
    /// When `tokens` was computed.
    seen: Instant,
}

/// One shard: two generations of buckets, an O(1) approximation of LRU. When `current` is full
/// it becomes `previous` and the old `previous` (clients not seen for a generation) is dropped.
struct Shard<K> {
    /// Buckets touched in this generation.
    current: HashMap<K, Bucket>,
    /// Buckets of the generation before; moved back to `current` when touched.
    previous: HashMap<K, Bucket>,
}

impl<K> Shard<K> {
    /// No buckets yet.
    fn new() -> Self {
        Self {
            current: HashMap::new(),
            previous: HashMap::new(),
        }
    }
}

/// Token buckets keyed by `K`: `burst` tokens, refilled at `per_minute`; at most `capacity`
/// keys tracked (the least recently seen forgotten first, which only ever gives a fresh bucket).
pub struct RateLimiter<K> {
    /// Refill rate per minute; 0 disables the limit.
    per_minute: u32,
    /// Bucket size.
    burst: u32,
    /// Most keys per generation of one shard.
    per_shard: usize,
    /// Picks a key's shard.
    hasher: RandomState,
    /// The buckets.
    shards: Vec<Mutex<Shard<K>>>,
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    /// A limiter of `per_minute` with bursts of `burst`, tracking about `capacity` keys.
    pub fn new(per_minute: u32, burst: u32, capacity: usize) -> Self {
        Self {
            per_minute,
            burst: burst.max(1),
            per_shard: (capacity / SHARDS / 2).max(1),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
        }
    }

    /// Takes a token for `key`, or says how long until one is available.
    pub fn take(&self, key: K, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        let Some(Ok(mut guard)) = self.shards.get(index).map(Mutex::lock) else {
            return Ok(());
        };
        let shard = &mut *guard;
        let capacity = f64::from(self.burst);
        let per_second = f64::from(self.per_minute) / 60.0;
        let known = match shard.current.get(&key) {
            Some(bucket) => Some(*bucket),
            None => shard.previous.remove(&key),
        };
        let mut bucket = known.unwrap_or(Bucket {
            tokens: capacity,
            seen: now,
        });
        let elapsed = now.saturating_duration_since(bucket.seen).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.seen = now;
        let answer = if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        };
        if shard.current.len() >= self.per_shard && !shard.current.contains_key(&key) {
            shard.previous = std::mem::take(&mut shard.current);
        }
        shard.current.insert(key, bucket);
        answer
    }

    /// Keys tracked now (for tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shards
            .iter()
            .filter_map(|shard| shard.lock().ok())
            .map(|shard| shard.current.len() + shard.previous.len())
            .sum()
    }
}

/// The bucket an address counts against: IPv4 as is, IPv6 by its /64 (one subscriber's
/// network), IPv4-mapped IPv6 as the IPv4 address.
pub fn client_network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// An address range of `http.trusted_proxies`: `10.0.0.1`, `10.0.0.0/8`, `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    network: IpAddr,
    /// Leading bits that must match.
    prefix: u8,
}

impl Cidr {
    /// Parses `addr` or `addr/prefix`.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix.parse::<u8>().ok()?)),
            None => (text.trim(), None),
        };
        let network: IpAddr = addr.parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { network, prefix })
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let mask = |bits: u32| {
            u128::MAX
                .checked_shl(bits - u32::from(self.prefix))
                .unwrap_or(0)
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask(32);
                u128::from(u32::from(net)) & mask == u128::from(u32::from(ip)) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask(128);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The client's address: the peer, or when the peer is a trusted proxy the right-most address
/// of `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|cidr| cidr.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for hop in header.rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn the_bucket_refills_over_the_minute() {
        let limiter = RateLimiter::new(2, 2, 100);
        let now = Instant::now();
        assert!(limiter.take(ip("127.0.0.1"), now).is_ok());
        assert!(limiter.take(ip("127.0.0.1"), now).is_ok());
        let wait = limiter.take(ip("127.0.0.1"), now).expect_err("empty");
        assert!(
            wait <= Duration::from_secs(30) && wait > Duration::from_secs(29),
            "{wait:?}"
        );
        assert!(
            limiter
                .take(ip("127.0.0.1"), now + Duration::from_secs(30))
                .is_ok()
        );
        assert!(limiter.take(ip("10.0.0.1"), now).is_ok(), "per IP");
        assert!(RateLimiter::new(0, 0, 1).take(ip("127.0.0.1"), now).is_ok());
    }

    #[test]
    fn a_burst_larger_than_the_rate_is_allowed_once() {
        let limiter = RateLimiter::new(60, 1000, 10);
        let now = Instant::now();
        for _ in 0..1000 {
            assert!(limiter.take(0_u8, now).is_ok());
        }
        assert!(limiter.take(0_u8, now).is_err());
        assert!(limiter.take(0_u8, now + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn the_map_stays_bounded_and_keeps_recent_clients() {
        let limiter = RateLimiter::new(1, 1, 1024);
        let now = Instant::now();
        assert!(limiter.take(u32::MAX, now).is_ok());
        for n in 0..200_000_u32 {
            let _ = limiter.take(n, now);
            if n % 100 == 0 {
                // A client seen often stays tracked (and limited).
                assert!(limiter.take(u32::MAX, now).is_err(), "forgot at {n}");
            }
        }
        assert!(limiter.tracked() <= 1024 + SHARDS, "{}", limiter.tracked());
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        assert_eq!(
            client_network(ip("2001:db8:1:2:aaaa::1")),
            client_network(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            client_network(ip("2001:db8:1:2::1")),
            client_network(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_network(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(client_network(ip("10.1.2.3")), ip("10.1.2.3"));
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let trusted = [
            Cidr::parse("10.0.0.0/8").expect("cidr"),
            Cidr::parse("::1").expect("cidr"),
        ];
        let xff = Some("203.0.113.9, 198.51.100.7, 10.0.0.2");
        assert_eq!(
            client_ip(ip("10.0.0.1"), xff, &trusted),
            ip("198.51.100.7"),
            "right-most untrusted hop"
        );
        assert_eq!(
            client_ip(ip("192.0.2.1"), xff, &trusted),
            ip("192.0.2.1"),
            "an untrusted peer's header is ignored"
        );
        assert_eq!(client_ip(ip("::1"), None, &trusted), ip("::1"));
        assert_eq!(
            client_ip(ip("10.0.0.1"), Some("garbage"), &trusted),
            ip("10.0.0.1")
        );
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope").is_none());
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("all")
                .contains(ip("8.8.8.8"))
        );
        assert!(
            Cidr::parse("10.0.0.0/8")
                .expect("cidr")
                .contains(ip("::ffff:10.9.9.9"))
        );
    }
}
