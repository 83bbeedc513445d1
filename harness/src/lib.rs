pub fn placeholder() {}

pub mod backend;
