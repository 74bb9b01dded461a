//! One module per verb.

pub mod agent;
pub mod apply;
#[cfg(feature = "controller")]
pub mod controller;
pub mod cordon;
pub mod credentials;
pub mod delete;
pub mod describe;
pub mod drain;
pub mod duration;
pub mod exec;
pub mod get;
pub mod images;
pub mod label;
pub mod logs;
pub mod port_forward;
pub mod push;
pub mod reset;
pub mod rollout;
pub mod scale;
pub mod signals;
pub mod token;
#[cfg(feature = "controller")]
pub mod up;
pub mod wait;
