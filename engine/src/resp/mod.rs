//! The data port: one task per client ([`connection`]) and the commands ([`cmd`]). The
//! RESP values and their framing live below storage, in [`crate::frame`].

pub mod cmd;
pub mod connection;
