pub mod frames;
pub mod xdp;
