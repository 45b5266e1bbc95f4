//! COMMAND DOCS: what each command does, in Strand's words, with the Redis group it belongs
//! to and the Redis version that introduced it (`tests/redis-suite/run` checks those two
//! against Redis 7.0.15's own command table). Every command the data port knows has a row
//! (a unit test checks it).

use super::Spec;
use crate::frame::Frame;

pub struct Doc {
    pub name: &'static str,
    pub group: &'static str,
    pub since: &'static str,
    pub summary: &'static str,
}

const fn doc(name: &'static str, group: &'static str, since: &'static str, summary: &'static str) -> Doc {
    Doc { name, group, since, summary }
}

pub const DOCS: &[Doc] = &[
    doc("append", "string", "2.0.0", "Appends a value to a string key, creating it when absent."),
    doc("auth", "connection", "1.0.0", "Authenticates the connection."),
    doc(
        "bitcount",
        "bitmap",
        "2.6.0",
        "Counts the set bits of a string, optionally within a byte or bit range.",
    ),
    doc(
        "bitfield",
        "bitmap",
        "3.2.0",
        "Reads, sets and increments integer fields of any width at bit offsets of a string.",
    ),
    doc("bitfield_ro", "bitmap", "6.0.0", "Reads integer fields of any width at bit offsets of a string."),
    doc("bitop", "bitmap", "2.6.0", "Stores the bitwise AND, OR, XOR or NOT of strings in a key."),
    doc("bitpos", "bitmap", "2.8.7", "Finds the first bit set to 0 or 1 in a string."),
    doc("blmove", "list", "6.2.0", "Moves an element from one list to another, blocking until one is there."),
    doc(
        "blmpop",
        "list",
        "7.0.0",
        "Pops elements from the first non-empty list of several, blocking until one has any.",
    ),
    doc(
        "blpop",
        "list",
        "2.0.0",
        "Pops the first element of the first non-empty list, blocking until one has any.",
    ),
    doc(
        "brpop",
        "list",
        "2.0.0",
        "Pops the last element of the first non-empty list, blocking until one has any.",
    ),
    doc(
        "brpoplpush",
        "list",
        "2.2.0",
        "Moves the last element of a list to the head of another, blocking until one is there.",
    ),
    doc(
        "bzmpop",
        "sorted-set",
        "7.0.0",
        "Pops the lowest- or highest-scored members of the first non-empty sorted set, blocking until one has any.",
    ),
    doc(
        "bzpopmax",
        "sorted-set",
        "5.0.0",
        "Pops the highest-scored member of the first non-empty sorted set, blocking until one has any.",
    ),
    doc(
        "bzpopmin",
        "sorted-set",
        "5.0.0",
        "Pops the lowest-scored member of the first non-empty sorted set, blocking until one has any.",
    ),
    doc("client", "connection", "2.4.0", "Inspects and sets this connection's client state."),
    doc("command", "server", "2.8.13", "Describes the commands the server knows."),
    doc("config", "server", "2.0.0", "Reads and sets configuration parameters."),
    doc("copy", "generic", "6.2.0", "Copies a key's value to another key."),
    doc("dbsize", "server", "1.0.0", "Returns the number of keys."),
    doc("decr", "string", "1.0.0", "Decrements a key's integer value by one."),
    doc("decrby", "string", "1.0.0", "Decrements a key's integer value by a given amount."),
    doc("del", "generic", "1.0.0", "Deletes keys."),
    doc("discard", "transactions", "2.0.0", "Discards the commands queued after MULTI."),
    doc("dump", "generic", "2.6.0", "Serializes a key's value in Strand's own payload format."),
    doc("echo", "connection", "1.0.0", "Returns its argument."),
    doc("exec", "transactions", "1.2.0", "Runs the commands queued after MULTI as one transaction."),
    doc("exists", "generic", "1.0.0", "Counts how many of the given keys exist."),
    doc("expire", "generic", "1.0.0", "Sets a key's time to live in seconds."),
    doc("expireat", "generic", "1.2.0", "Sets a key's expiry as a Unix time in seconds."),
    doc("expiretime", "generic", "7.0.0", "Returns a key's expiry as a Unix time in seconds."),
    doc("flushall", "server", "1.0.0", "Deletes every key."),
    doc("flushdb", "server", "1.0.0", "Deletes every key of the database."),
    doc("function", "scripting", "7.0.0", "Lists functions (Strand has no scripting: always none)."),
    doc("get", "string", "1.0.0", "Returns a string key's value."),
    doc("getbit", "bitmap", "2.2.0", "Returns the bit at an offset of a string."),
    doc("getdel", "string", "6.2.0", "Returns a string key's value and deletes the key."),
    doc("getex", "string", "6.2.0", "Returns a string key's value and sets or clears its expiry."),
    doc("getrange", "string", "2.4.0", "Returns a substring of a string value."),
    doc("getset", "string", "1.0.0", "Sets a string key and returns its previous value."),
    doc("hdel", "hash", "2.0.0", "Deletes fields of a hash."),
    doc(
        "hello",
        "connection",
        "6.0.0",
        "Negotiates the protocol version, authenticates and names the connection.",
    ),
    doc("hexists", "hash", "2.0.0", "Tells whether a hash has a field."),
    doc("hget", "hash", "2.0.0", "Returns the value of a hash field."),
    doc("hgetall", "hash", "2.0.0", "Returns every field and value of a hash."),
    doc("hincrby", "hash", "2.0.0", "Increments a hash field's integer value."),
    doc("hincrbyfloat", "hash", "2.6.0", "Increments a hash field's floating-point value."),
    doc("hkeys", "hash", "2.0.0", "Returns every field of a hash."),
    doc("hlen", "hash", "2.0.0", "Returns the number of fields of a hash."),
    doc("hmget", "hash", "2.0.0", "Returns the values of several hash fields."),
    doc("hmset", "hash", "2.0.0", "Sets several hash fields (as HSET)."),
    doc("hrandfield", "hash", "6.2.0", "Returns random fields of a hash."),
    doc("hscan", "hash", "2.8.0", "Iterates over the fields and values of a hash."),
    doc("hset", "hash", "2.0.0", "Sets hash fields, creating the hash when absent."),
    doc("hsetnx", "hash", "2.0.0", "Sets a hash field only if it does not exist."),
    doc("hstrlen", "hash", "3.2.0", "Returns the length of a hash field's value."),
    doc("hvals", "hash", "2.0.0", "Returns every value of a hash."),
    doc("incr", "string", "1.0.0", "Increments a key's integer value by one."),
    doc("incrby", "string", "1.0.0", "Increments a key's integer value by a given amount."),
    doc("incrbyfloat", "string", "2.6.0", "Increments a key's floating-point value."),
    doc("info", "server", "1.0.0", "Returns information and statistics about the server."),
    doc("keys", "generic", "1.0.0", "Returns the keys matching a glob pattern."),
    doc("lcs", "string", "7.0.0", "Finds the longest common subsequence of two strings."),
    doc("lindex", "list", "1.0.0", "Returns a list element by its index."),
    doc("linsert", "list", "2.2.0", "Inserts an element before or after another in a list."),
    doc("llen", "list", "1.0.0", "Returns the length of a list."),
    doc("lmove", "list", "6.2.0", "Moves an element from one end of a list to an end of another."),
    doc("lmpop", "list", "7.0.0", "Pops elements from the first non-empty list of several."),
    doc("lpop", "list", "1.0.0", "Pops elements from the head of a list."),
    doc("lpos", "list", "6.0.6", "Returns the positions of matching elements in a list."),
    doc("lpush", "list", "1.0.0", "Pushes elements onto the head of a list."),
    doc("lpushx", "list", "2.2.0", "Pushes elements onto the head of a list only if it exists."),
    doc("lrange", "list", "1.0.0", "Returns a range of a list's elements."),
    doc("lrem", "list", "1.0.0", "Removes matching elements from a list."),
    doc("lset", "list", "1.0.0", "Sets a list element by its index."),
    doc("ltrim", "list", "1.0.0", "Trims a list to a range of its elements."),
    doc("memory", "server", "4.0.0", "Reports memory usage."),
    doc("mget", "string", "1.0.0", "Returns the values of several string keys."),
    doc("move", "generic", "1.0.0", "Moves a key to another database (Strand has one: always an error)."),
    doc("mset", "string", "1.0.1", "Sets several string keys."),
    doc("msetnx", "string", "1.0.1", "Sets several string keys only if none of them exists."),
    doc("multi", "transactions", "1.2.0", "Starts a transaction: later commands are queued until EXEC."),
    doc("object", "generic", "2.2.3", "Inspects a key's value."),
    doc("persist", "generic", "2.2.0", "Removes a key's expiry."),
    doc("pexpire", "generic", "2.6.0", "Sets a key's time to live in milliseconds."),
    doc("pexpireat", "generic", "2.6.0", "Sets a key's expiry as a Unix time in milliseconds."),
    doc("pexpiretime", "generic", "7.0.0", "Returns a key's expiry as a Unix time in milliseconds."),
    doc("ping", "connection", "1.0.0", "Checks that the server answers."),
    doc("psetex", "string", "2.6.0", "Sets a string key with a time to live in milliseconds."),
    doc("pttl", "generic", "2.6.0", "Returns a key's time to live in milliseconds."),
    doc("quit", "connection", "1.0.0", "Closes the connection."),
    doc("randomkey", "generic", "1.0.0", "Returns a random key."),
    doc("rename", "generic", "1.0.0", "Renames a key, replacing any key of the new name."),
    doc("renamenx", "generic", "1.0.0", "Renames a key only if the new name is free."),
    doc("reset", "connection", "6.2.0", "Resets the connection's state."),
    doc("restore", "generic", "2.6.0", "Creates a key from a DUMP payload."),
    doc("role", "server", "2.8.12", "Returns the instance's replication role."),
    doc("rpop", "list", "1.0.0", "Pops elements from the tail of a list."),
    doc("rpoplpush", "list", "1.2.0", "Moves the last element of a list to the head of another."),
    doc("rpush", "list", "1.0.0", "Pushes elements onto the tail of a list."),
    doc("rpushx", "list", "2.2.0", "Pushes elements onto the tail of a list only if it exists."),
    doc("sadd", "set", "1.0.0", "Adds members to a set."),
    doc("save", "server", "1.0.0", "Makes the data durable now (every commit already is)."),
    doc("scan", "generic", "2.8.0", "Iterates over the keys."),
    doc("scard", "set", "1.0.0", "Returns the number of members of a set."),
    doc("sdiff", "set", "1.0.0", "Returns the members of a set not in the others."),
    doc("sdiffstore", "set", "1.0.0", "Stores the difference of sets in a key."),
    doc("select", "connection", "1.0.0", "Selects the database (only database 0 exists)."),
    doc("set", "string", "1.0.0", "Sets a string key, with optional expiry and conditions."),
    doc("setbit", "bitmap", "2.2.0", "Sets or clears the bit at an offset of a string."),
    doc("setex", "string", "2.0.0", "Sets a string key with a time to live in seconds."),
    doc("setnx", "string", "1.0.0", "Sets a string key only if it does not exist."),
    doc("setrange", "string", "2.2.0", "Overwrites part of a string value at an offset."),
    doc("shutdown", "server", "1.0.0", "Stops the server."),
    doc("sinter", "set", "1.0.0", "Returns the members common to sets."),
    doc("sintercard", "set", "7.0.0", "Counts the members common to sets."),
    doc("sinterstore", "set", "1.0.0", "Stores the intersection of sets in a key."),
    doc("sismember", "set", "1.0.0", "Tells whether a value is a member of a set."),
    doc("smembers", "set", "1.0.0", "Returns every member of a set."),
    doc("smismember", "set", "6.2.0", "Tells for several values whether each is a member of a set."),
    doc("smove", "set", "1.0.0", "Moves a member from one set to another."),
    doc("sort", "generic", "1.0.0", "Sorts a list, set or sorted set, optionally storing the result."),
    doc("sort_ro", "generic", "7.0.0", "Sorts a list, set or sorted set (read-only)."),
    doc("spop", "set", "1.0.0", "Removes and returns random members of a set."),
    doc("srandmember", "set", "1.0.0", "Returns random members of a set."),
    doc("srem", "set", "1.0.0", "Removes members from a set."),
    doc("sscan", "set", "2.8.0", "Iterates over the members of a set."),
    doc("strlen", "string", "2.2.0", "Returns the length of a string value."),
    doc("substr", "string", "1.0.0", "Returns a substring of a string value (as GETRANGE)."),
    doc("sunion", "set", "1.0.0", "Returns the members of any of the sets."),
    doc("sunionstore", "set", "1.0.0", "Stores the union of sets in a key."),
    doc("swapdb", "server", "4.0.0", "Swaps two databases (only database 0 exists)."),
    doc("time", "server", "2.6.0", "Returns the server's time."),
    doc(
        "touch",
        "generic",
        "3.2.1",
        "Counts how many of the given keys exist (Strand keeps no access times).",
    ),
    doc("ttl", "generic", "1.0.0", "Returns a key's time to live in seconds."),
    doc("type", "generic", "1.0.0", "Returns the type of a key's value."),
    doc("unlink", "generic", "4.0.0", "Deletes keys."),
    doc("unwatch", "transactions", "2.2.0", "Forgets every watched key."),
    doc("wait", "generic", "3.0.0", "Waits until the connection's last write is acknowledged by receivers."),
    doc("watch", "transactions", "2.2.0", "Watches keys: EXEC then fails if any of them changed."),
    doc("zadd", "sorted-set", "1.2.0", "Adds members to a sorted set or updates their scores."),
    doc("zcard", "sorted-set", "1.2.0", "Returns the number of members of a sorted set."),
    doc("zcount", "sorted-set", "2.0.0", "Counts the members of a sorted set within a score range."),
    doc("zdiff", "sorted-set", "6.2.0", "Returns the members of a sorted set not in the others."),
    doc("zdiffstore", "sorted-set", "6.2.0", "Stores the difference of sorted sets in a key."),
    doc("zincrby", "sorted-set", "1.2.0", "Increments the score of a sorted-set member."),
    doc("zinter", "sorted-set", "6.2.0", "Returns the members common to sorted sets, with combined scores."),
    doc("zintercard", "sorted-set", "7.0.0", "Counts the members common to sorted sets."),
    doc("zinterstore", "sorted-set", "2.0.0", "Stores the intersection of sorted sets in a key."),
    doc(
        "zlexcount",
        "sorted-set",
        "2.8.9",
        "Counts the members of a sorted set within a lexicographical range.",
    ),
    doc(
        "zmpop",
        "sorted-set",
        "7.0.0",
        "Pops the lowest- or highest-scored members of the first non-empty sorted set.",
    ),
    doc("zmscore", "sorted-set", "6.2.0", "Returns the scores of several sorted-set members."),
    doc("zpopmax", "sorted-set", "5.0.0", "Pops the highest-scored members of a sorted set."),
    doc("zpopmin", "sorted-set", "5.0.0", "Pops the lowest-scored members of a sorted set."),
    doc("zrandmember", "sorted-set", "6.2.0", "Returns random members of a sorted set."),
    doc(
        "zrange",
        "sorted-set",
        "1.2.0",
        "Returns a range of a sorted set's members by rank, score or lexicographical order.",
    ),
    doc(
        "zrangebylex",
        "sorted-set",
        "2.8.9",
        "Returns the members of a sorted set within a lexicographical range.",
    ),
    doc("zrangebyscore", "sorted-set", "1.0.5", "Returns the members of a sorted set within a score range."),
    doc("zrangestore", "sorted-set", "6.2.0", "Stores a range of a sorted set in a key."),
    doc("zrank", "sorted-set", "2.0.0", "Returns a member's rank in a sorted set, lowest score first."),
    doc("zrem", "sorted-set", "1.2.0", "Removes members from a sorted set."),
    doc(
        "zremrangebylex",
        "sorted-set",
        "2.8.9",
        "Removes the members of a sorted set within a lexicographical range.",
    ),
    doc(
        "zremrangebyrank",
        "sorted-set",
        "2.0.0",
        "Removes the members of a sorted set within a range of ranks.",
    ),
    doc(
        "zremrangebyscore",
        "sorted-set",
        "1.2.0",
        "Removes the members of a sorted set within a score range.",
    ),
    doc(
        "zrevrange",
        "sorted-set",
        "1.2.0",
        "Returns a range of a sorted set's members by rank, highest score first.",
    ),
    doc(
        "zrevrangebylex",
        "sorted-set",
        "2.8.9",
        "Returns the members of a sorted set within a lexicographical range, in reverse.",
    ),
    doc(
        "zrevrangebyscore",
        "sorted-set",
        "2.2.0",
        "Returns the members of a sorted set within a score range, highest first.",
    ),
    doc("zrevrank", "sorted-set", "2.0.0", "Returns a member's rank in a sorted set, highest score first."),
    doc("zscan", "sorted-set", "2.8.0", "Iterates over the members and scores of a sorted set."),
    doc("zscore", "sorted-set", "1.2.0", "Returns a sorted-set member's score."),
    doc(
        "zunion",
        "sorted-set",
        "6.2.0",
        "Returns the members of any of the sorted sets, with combined scores.",
    ),
    doc("zunionstore", "sorted-set", "2.0.0", "Stores the union of sorted sets in a key."),
];

/// The reply to `COMMAND DOCS [name …]`: every command, or the named ones it knows (others
/// are left out, as Redis does).
pub fn reply(names: &[String]) -> Frame {
    let entry = |d: &Doc| {
        let field =
            |k: &str, v: &str| (Frame::Bulk(k.as_bytes().to_vec()), Frame::Bulk(v.as_bytes().to_vec()));
        (
            Frame::Bulk(d.name.as_bytes().to_vec()),
            Frame::Map(vec![field("summary", d.summary), field("since", d.since), field("group", d.group)]),
        )
    };
    let chosen: Vec<(Frame, Frame)> = if names.is_empty() {
        DOCS.iter().map(entry).collect()
    } else {
        names.iter().filter_map(|n| find(&n.to_ascii_lowercase())).map(entry).collect()
    };
    Frame::Map(chosen)
}

fn find(name: &str) -> Option<&'static Doc> {
    DOCS.iter().find(|d| d.name == name)
}

/// The commands without a row, and the rows without a command (both empty when in step).
pub fn drift(specs: &[&Spec]) -> (Vec<&'static str>, Vec<&'static str>) {
    let missing = specs.iter().map(|s| s.name).filter(|n| find(n).is_none()).collect();
    let extra = DOCS.iter().map(|d| d.name).filter(|n| !specs.iter().any(|s| s.name == *n)).collect();
    (missing, extra)
}
