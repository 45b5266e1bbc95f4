//! The data port: RESP framing ([`frame`]), one task per client ([`connection`]) and the
//! commands ([`cmd`]).

pub mod cmd;
pub mod connection;
pub mod frame;
