//! One module per verb.

pub mod apply;
pub mod controller;
pub mod delete;
pub mod describe;
pub mod get;
pub mod token;
pub mod up;
