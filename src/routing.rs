//! Study → diagnosis center.
//!
//! Each imaging center has a home diagnosis center in `pipeline.toml`. Studies from a
//! center tamiz does not know still have to be read: they go to the configured
//! default center, and the reason says so.

use crate::config::Config;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub center: String,
    pub reason: String,
}

/// Picks the diagnosis center for a study from `imaging_center` (if known).
pub fn route(config: &Config, imaging_center: Option<&str>) -> Route {
    match imaging_center.and_then(|id| config.imaging_center(id)) {
        Some(c) => Route {
            center: c.home.clone(),
            reason: format!("home diagnosis center of imaging center {}", c.id),
        },
        None => Route {
            center: config.default_diagnosis_center.clone(),
            reason: "imaging center not configured: default diagnosis center".into(),
        },
    }
}

/// Finds the configured imaging center for an upload: the center the uploader named,
/// else the one whose Institution Name matches.
pub fn identify_imaging_center(
    config: &Config,
    declared: Option<&str>,
    institution_name: Option<&str>,
) -> Option<String> {
    if let Some(id) = declared {
        if config.imaging_center(id).is_some() {
            return Some(id.to_owned());
        }
    }
    let name = institution_name?;
    config
        .imaging_centers
        .iter()
        .find(|c| c.id == name || c.name == name || c.institution_names.iter().any(|n| n == name))
        .map(|c| c.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        toml::from_str(
            r#"
            default_diagnosis_center = "central"
            [[diagnosis_centers]]
            id = "central"
            name = "Central"
            [[diagnosis_centers]]
            id = "north"
            name = "North"
            [[imaging_centers]]
            id = "clinic-a"
            name = "Clinic A"
            home = "north"
            institution_names = ["CLINICA A"]
            "#,
        )
        .unwrap()
    }

    #[test]
    fn home_center_and_fallback() {
        let c = config();
        assert_eq!(route(&c, Some("clinic-a")).center, "north");
        let r = route(&c, None);
        assert_eq!(r.center, "central");
        assert!(r.reason.contains("not configured"));
    }

    #[test]
    fn center_from_header_or_institution() {
        let c = config();
        assert_eq!(
            identify_imaging_center(&c, Some("clinic-a"), None).as_deref(),
            Some("clinic-a")
        );
        assert_eq!(
            identify_imaging_center(&c, None, Some("CLINICA A")).as_deref(),
            Some("clinic-a")
        );
        assert_eq!(
            identify_imaging_center(&c, Some("nope"), Some("other")),
            None
        );
    }
}
