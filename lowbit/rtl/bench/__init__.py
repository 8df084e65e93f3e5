"""cocotb benches of the RTL units (run by rtl.cocotb_runner; importable only inside a cocotb simulation)."""
