//! Session stores on disk, private to wasup's user: directories 0700, files 0600, whatever the
//! process umask.

use std::{
    fs::{self, OpenOptions},
    io,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

/// Mode of the data directory and every store directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every store file (SQLite gives its `-wal` and `-shm` files the database's mode).
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents 0700 and makes `dir` and the `levels` directories
/// above it 0700 (the session's directory, `sessions/`, the data directory).
pub fn private_dir(dir: &Path, levels: usize) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    for ancestor in dir.ancestors().take(levels + 1) {
        fs::set_permissions(ancestor, fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Creates `file` 0600 when missing and makes it 0600 when it exists.
pub fn private_file(file: &Path) -> io::Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(file)?;
    fs::set_permissions(file, fs::Permissions::from_mode(FILE_MODE))
}

/// Writes `contents` to `file`, 0600.
pub fn write_private(file: &Path, contents: impl AsRef<[u8]>) -> io::Result<()> {
    private_file(file)?;
    fs::write(file, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn stores_are_private_whatever_the_umask() {
        let root = std::env::temp_dir().join(format!("wasup-files-{}", std::process::id()));
        let data = root.join("data");
        fs::create_dir_all(&data).expect("data dir");
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).expect("chmod");
        let store = data.join("sessions").join("s1");
        private_dir(&store, 2).expect("store dir");
        for dir in [&data, &data.join("sessions"), &store] {
            assert_eq!(mode(dir), DIR_MODE, "{}", dir.display());
        }
        let file = store.join("whatsapp.db");
        fs::write(&file, b"x").expect("write");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
        private_file(&file).expect("file");
        assert_eq!(mode(&file), FILE_MODE);
        assert_eq!(fs::read(&file).expect("read"), b"x", "contents kept");
        write_private(&store.join("paired"), "jid").expect("marker");
        assert_eq!(mode(&store.join("paired")), FILE_MODE);
        fs::remove_dir_all(&root).expect("clean up");
    }
}
