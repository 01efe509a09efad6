//! The proto crate's integration tests, in one binary: every message,
//! field and enum value of the `.proto` files is documented ([`documented`]).

mod documented;
