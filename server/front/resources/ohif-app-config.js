/**
 * OHIF 3.13 configuration written by vindr-dicom (served by `vindr-convert view` as
 * /app-config.js): one DICOMweb data source, the same-origin gateway to our PACS, a
 * mammography hanging protocol and labels for the radiologists' boxes.
 */
/** Mammography 4-up hanging protocol: R CC | L CC / R MLO | L MLO, matched on ImageLaterality + ViewPosition.
 * OHIF makes one displaySet per MG instance (isSingleImageModality), so each selector picks one image. */
const mammoView = (lat, view) => ({
  seriesMatchingRules: [
    { attribute: 'Modality', constraint: { equals: { value: 'MG' } }, required: true },
    { attribute: 'ImageLaterality', constraint: { equals: { value: lat } }, required: true },
    { attribute: 'ViewPosition', constraint: { equals: { value: view } }, required: true },
  ],
});
const mammoViewport = id => ({
  viewportOptions: { viewportId: id, toolGroupId: 'default', allowUnmatchedView: true },
  displaySets: [{ id }],
});
const vindrMammo4up = {
  id: 'vindr-mammo-4up',
  name: 'Mammography 4-up',
  protocolMatchingRules: [
    { attribute: 'ModalitiesInStudy', constraint: { contains: ['MG'] }, weight: 10 },
  ],
  toolGroupIds: ['default'],
  displaySetSelectors: {
    RCC: mammoView('R', 'CC'), LCC: mammoView('L', 'CC'),
    RMLO: mammoView('R', 'MLO'), LMLO: mammoView('L', 'MLO'),
  },
  defaultViewport: {
    viewportOptions: { viewportType: 'stack', toolGroupId: 'default', allowUnmatchedView: true },
    displaySets: [{ id: 'RCC', matchedDisplaySetsIndex: -1 }],
  },
  stages: [{
    name: '4-up',
    viewportStructure: { layoutType: 'grid', properties: { rows: 2, columns: 2 } },
    viewports: [mammoViewport('RCC'), mammoViewport('LCC'), mammoViewport('RMLO'), mammoViewport('LMLO')],
  }],
};
/**
 * Label the hydrated boxes like the SR viewport does ("Mass, Focal Asymmetry (BI-RADS 4)")
 * instead of with ROI statistics: each image's hydrated rectangles get, in order, the labels
 * of the same image's SR display annotations (both follow the SR's order).
 */
const labelBoxes = () => {
  const tools = window.cornerstoneTools;
  if (!tools) return;
  const all = tools.annotation.state.getAllAnnotations();
  const byImage = name => all.filter(a => a.metadata.toolName === name).reduce((map, a) => {
    const key = a.metadata.referencedImageId;
    return map.set(key, [...(map.get(key) || []), a]);
  }, new Map());
  const labels = byImage('DICOMSRDisplay');
  byImage('RectangleROI').forEach((boxes, imageId) => (labels.get(imageId) || [])
    .forEach((named, i) => { if (boxes[i] && named.data.label) boxes[i].data.label = named.data.label; }));
  tools.ToolGroupManager.getAllToolGroups().forEach(group => {
    if (group.hasTool?.('RectangleROI')) {
      group.setToolConfiguration('RectangleROI', {
        getTextLines: data => [data.label || data.finding?.text || 'Finding'] });
    }
  });
  window.cornerstone?.getRenderingEngines().forEach(engine => engine.render());
};

/**
 * Draw the exam's SR boxes on the 4-up: once the layout is hung, the exam's MG series are
 * marked as tracked (so OHIF does not ask whether to track them) and the SR's boxes are
 * hydrated into measurements on their images, without moving any view.
 */
const hydrateSrOn4up = ({ servicesManager, commandsManager }) => {
  const { displaySetService, viewportGridService, hangingProtocolService } = servicesManager.services;
  const done = new Set();
  const hydrate = async () => {
    if (hangingProtocolService.getActiveProtocol?.()?.protocol?.id !== vindrMammo4up.id) return;
    const sets = displaySetService.getActiveDisplaySets();
    // the radiologists' SR; a model's (`predictions import`: series "AI <name> <version>") is not
    const sr = sets.find(ds => ds.Modality === 'SR' && !String(ds.SeriesDescription || '').startsWith('AI '));
    if (!sr || done.has(sr.displaySetInstanceUID)) return;
    const views = [...viewportGridService.getState().viewports.values()];
    if (views.length !== 4 || views.some(v => !v.displaySetInstanceUIDs?.length)) return;
    done.add(sr.displaySetInstanceUID);
    if (!sr.isLoaded) await sr.load();
    if (!sr.measurements?.length) return;  // an exam without boxes: nothing to draw
    const series = [...new Set(sets.filter(ds => ds.Modality === 'MG').map(ds => ds.SeriesInstanceUID))];
    commandsManager.runCommand('restoreTrackedSeries', {
      StudyInstanceUID: sr.StudyInstanceUID, SeriesInstanceUIDs: series });
    commandsManager.runCommand('hydrateStructuredReport', {
      displaySetInstanceUID: sr.displaySetInstanceUID });
    labelBoxes();
  };
  const later = () => setTimeout(() => hydrate().catch(e => console.warn('vindr: SR not drawn', e)), 300);
  const subscriptions = [
    hangingProtocolService.subscribe(hangingProtocolService.EVENTS.PROTOCOL_CHANGED, later),
    viewportGridService.subscribe(viewportGridService.EVENTS.GRID_STATE_CHANGED, later),
  ];
  return () => subscriptions.forEach(s => s.unsubscribe());
};

/** Extensions given as objects in window.config.extensions are registered as-is (no rebuild). */
let vindrUnsubscribe = null;
const vindrExtension = {
  id: 'vindr-dicom-extension',
  getHangingProtocolModule: () => [{ name: vindrMammo4up.id, protocol: vindrMammo4up }],
  onModeEnter: args => { vindrUnsubscribe = hydrateSrOn4up(args); },
  onModeExit: () => { if (vindrUnsubscribe) vindrUnsubscribe(); vindrUnsubscribe = null; },
};

window.config = {
  name: 'vindr-dicom',
  routerBasename: '/',
  extensions: [vindrExtension],
  modes: [],
  // no onboarding tour popups (they cover the viewport in screenshots)
  customizationService: {
    'ohif.tours': { $set: [] },
    // SR viewport box label: OHIF only shows NUM values + Finding Site; show our Tracking Identifier instead
    // The box label in OHIF's SR viewport. OHIF shows only NUM values and the finding site
    // ("Breast") there; our tracking identifier holds the labels and the finding BI-RADS:
    // "VinDr finding ['Mass', 'Focal Asymmetry'] BI-RADS 4 box ..." -> "Mass, Focal Asymmetry
    // (BI-RADS 4)". The measurement must be changed in place.
    onBeforeSRAddMeasurement: {
      $set: ({ measurement }) => {
        const text = measurement.TrackingIdentifier || '';
        const m = text.match(/^VinDr finding \[(.*)\](?: (BI-RADS \d))? box /);
        if (m) {
          const labels = m[1].replace(/'/g, '');
          measurement.labels = [{ label: 'Finding', value: m[2] ? `${labels} (${m[2]})` : labels }];
        }
        return measurement;
      },
    },
  },
  // viewer (longitudinal) mode: hydrate an SR shown in a viewport without the "track?" prompt
  disableConfirmationPrompts: true,
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: { option: 'never' },
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 10 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'orthanc',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'orthanc',
      configuration: {
        friendlyName: 'vindr-dicom Orthanc',
        name: 'orthanc',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        wadoUriRoot: '/wado',
        qidoSupportsIncludeField: true,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: false, // true lets a SEG bind to the wrong MG image (a race)
        supportsFuzzyMatching: false,
        supportsWildcard: true, // the gateway URL-decodes what OHIF encodes
        staticWado: false,
        singlepart: 'bulkdata,video',
        bulkDataURI: { enabled: true, relativeResolution: 'studies' },
        omitQuotationForMultipartRequest: true,
        dicomUploadEnabled: false,
      },
    },
  ],
};
