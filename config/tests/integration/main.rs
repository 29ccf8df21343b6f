//! Integration tests of `edgeplane-config`: one binary, a module per area.

mod api;
mod defaults;
mod examples;
mod explain;
mod keys;
mod readme;
mod rules;
mod support;
