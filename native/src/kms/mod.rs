//! Kernel mode setting: one file per concept (probe now; device, output, plane, commit later).

pub mod probe;
