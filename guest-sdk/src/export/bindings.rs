//! The guest bindings of `weft:workflow`, generated from the WIT package at
//! the workspace root. Nothing outside [`super`] and `crate::host`'s wasm
//! implementation touches these types.

wit_bindgen::generate!({
    path: "../wit",
    world: "workflow",
    pub_export_macro: true,
    export_macro_name: "__weft_export",
    default_bindings_module: "::weft_sdk::__private::bindings",
});
