//! Placeholder: the guest SDK is being written.
