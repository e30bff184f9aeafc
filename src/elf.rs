//! ELF dependency analysis (placeholder).
